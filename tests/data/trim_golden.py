"""Make the trimmed copies of the official golden sampler files that tests/test_equivalence.py reads.

    python tests/data/trim_golden.py [--source ../shared/golden_samplers]

Each file of `../shared/golden_samplers/` (format: its README.md) is copied to
`tests/data/golden_samplers/` with everything the tests compare against kept as stored (the
official outputs, starts, final f / M, and for the chaotic file every step's x_t and x0_hat) and
the bulky inputs they can rebuild dropped:

- `draws`: the official run's non-zero draws are, in file order, consecutive `torch.randn` calls
  of one `torch.Generator().manual_seed(seed)` (checked here for every draw). Each entry keeps
  role, step, used, shape, `drawn` (False: the zero tensor served for a draw the official code
  never reads) and a fingerprint of the stored tensor (its first 8 values and its float64 sum);
  the tests regenerate the tensors and check them against the fingerprints before use.
- `image`, `A_image`, `y_official`, `M_true`, `f_true`, and the per-step `x_t` / `x0_hat` /
  `x0_data` / `M` / `f` of the non-chaotic files (the tests compare those chains at the output).

Sizes: 24 MB in `../shared`, 1.9 MB here.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

import torch

HERE = Path(__file__).resolve().parent
CASES = ("dps_inpaint_random", "dps_sr4", "dpps_sr4", "diffpir_deblur_gaussian", "diffpir_sr4",
         "diffpir_inpaint_random", "gdp_sr4_x0", "gdp_lowlight_patches")
# The method zoo (README "The method zoo"): every file of these methods is copied.
ZOO_METHODS = ("ddrm", "ddnm", "pgdm", "reddiff", "daps", "mcg", "dpir")
# Zoo files keep every tensor up to this many elements (operator factors, check vectors, outputs)
# and drop the per-step trajectories, which the replay test does not read.
ZOO_MAX_ELEMENTS = 20000
DROPPED = ("image", "A_image", "y_official", "M_true", "f_true", "x_t", "x0_hat", "x0_data", "M", "f")
HEAD = 8


def fingerprint(tensor: torch.Tensor) -> Dict[str, Any]:
    """First values and float64 sum of a draw: enough to tell a regenerated tape from another one."""
    flat = tensor.flatten()
    return {"head": flat[:HEAD].clone(), "sum": float(flat.double().sum())}


def trimmed_draws(case: Dict[str, Any]) -> list:
    """The draws as fingerprints when they are the seeded generator's consecutive draws (zeros
    where nothing was drawn), else as stored: some zoo files' official code drew measurement noise
    or masks from the same RNG between the tape's draws, so their tapes cannot be regenerated."""
    generator = torch.Generator().manual_seed(case["seed"])
    draws, regenerable = [], True
    for entry in case["draws"]:
        tensor = entry["tensor"]
        drawn = bool(tensor.any())
        if drawn and not torch.equal(torch.randn(tensor.shape, generator=generator), tensor):
            if case["method"] not in ZOO_METHODS:
                raise ValueError(f"{case['name']}: draw {len(draws)} ({entry['role']}) is not the seeded generator's next draw")
            regenerable = False
        draws.append({"role": entry["role"], "step": entry["step"], "used": entry["used"],
                      "shape": list(tensor.shape), "drawn": drawn, **fingerprint(tensor)})
    if regenerable:
        return draws
    return [{"role": e["role"], "step": e["step"], "used": e["used"], "tensor": e["tensor"].contiguous().clone()}
            for e in case["draws"]]


def trim(case: Dict[str, Any]) -> Dict[str, Any]:
    if case["method"] in ZOO_METHODS:
        out = {key: value for key, value in case.items() if key != "draws" and not (
            isinstance(value, torch.Tensor) and value.numel() > ZOO_MAX_ELEMENTS)}
    else:
        keep = set(DROPPED) - {"x_t", "x0_hat"} if case["chaotic"] else set(DROPPED)
        out = {key: value for key, value in case.items() if key not in keep and key != "draws"}
    out["draws"] = trimmed_draws(case)
    # Stored tensors can be views of larger ones (torch.save writes the whole storage): save copies.
    return {key: value.clone() if isinstance(value, torch.Tensor) else value for key, value in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parents[2] / "shared" / "golden_samplers")
    args = parser.parse_args()
    target = HERE / "golden_samplers"
    target.mkdir(exist_ok=True)
    zoo = sorted(p.stem for p in args.source.glob("*.pt") if p.stem.split("_")[0] in ZOO_METHODS)
    for name in CASES + tuple(zoo):
        case = torch.load(args.source / f"{name}.pt", weights_only=True)
        path = target / f"{name}.pt"
        torch.save(trim(case), path)
        print(f"{path.relative_to(HERE.parents[1])}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
