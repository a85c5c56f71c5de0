"""Teacher forcing of DDNM and PiGDM on the full golden files (their per-visit states are trimmed from
the copies in tests/data): each visit / step starts from the official state with that step's official
draws and is compared with the official state after it. The numbers docs/methods/ddnm.md and
docs/methods/pgdm.md quote:

    OMP_NUM_THREADS=1 python tests/data/measure_ddnm_pgdm_steps.py [FOLDER]   (default ../shared/golden_samplers)
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
import test_equivalence as eq  # noqa: E402


def served(draws: List[torch.Tensor], run: Callable[[torch.Generator], Any]) -> Any:
    """run(generator) with torch.randn serving exactly `draws`."""
    with pytest.MonkeyPatch.context() as mp:
        return eq.with_tape(mp, draws, run)


def ddnm(case: Dict[str, Any], model: torch.nn.Module) -> str:
    """Denoising visits from x_t[k-1] (x_init), travel visits from the official x0 they re-noise
    (x0_hat[k]; all that visit's draws, zeros where the official run discarded them)."""
    op, sampler, skip = eq.operator(case), eq.build_sampler(**case["sampler"]), case["skip"]
    worst_x = worst_x0 = 0.0
    for k, ((t, t_next), kind) in enumerate(zip(case["visits"], case["visit_kind"])):
        i, j = t // skip, (t_next // skip if t_next >= 0 else -1)
        if kind == "travel":
            draws = [d["tensor"] for d in case["draws"] if d["step"] == k]
            x_next = served(draws, lambda g: sampler.travel(case["x0_hat"][k], j, g))
        else:
            x = case["x_init"] if k == 0 else case["x_t"][k - 1]
            draws = [d["tensor"] for d in case["draws"] if d["step"] == k and d["used"]]
            x_next, _, x0_ddnm = served(draws, lambda g: sampler.denoise(model, x, i, j, op, case["y"], case["sigma"], g))
            worst_x0 = max(worst_x0, eq.rel(x0_ddnm, case["x0_ddnm"][k]))
        worst_x = max(worst_x, eq.rel(x_next, case["x_t"][k]))
    return f"worst x_t {worst_x:.1e}, worst x0_ddnm {worst_x0:.1e}"


def pgdm(case: Dict[str, Any], model: torch.nn.Module) -> str:
    op, sampler, n = eq.operator(case), eq.build_sampler(**case["sampler"]), len(case["timesteps"])
    worst = 0.0
    for k in range(n):
        x = case["x_init"] if k == 0 else case["x_t"][k - 1]
        draws = [d["tensor"] for d in case["draws"] if d["step"] == k and d["used"] and d["role"] == "eta_noise"]
        x_next, _ = served(draws, lambda g: sampler.step(model, x, torch.full((1,), n - 1 - k), op, case["y"],
                                                         case["sigma"], g))
        worst = max(worst, eq.rel(x_next, case["x_t"][k]))
    return f"worst x_t {worst:.1e}"


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "golden_samplers"
    model = eq.golden_unet(torch.float32)
    for name, measure in (("ddnm_sr4_avgpool", ddnm), ("ddnm_plus_inpaint_noisy", ddnm),
                          ("pgdm_sr4", pgdm), ("pgdm_inpaint_random", pgdm)):
        case = torch.load(folder / f"{name}.pt", weights_only=True)
        print(f"{name} teacher forcing: {measure(case, model)}", flush=True)


if __name__ == "__main__":
    main()
