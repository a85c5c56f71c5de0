"""DDRM's per-step states against the full golden files (trimmed from the copies in tests/data): teacher
forcing (each step from the official x_t[k-1] with that step's used draws, compared with x_t[k] and
x0_hat[k]), the whole chain's states, the output and the saved image. The numbers docs/methods/ddrm.md
quotes:

    OMP_NUM_THREADS=1 python tests/data/measure_ddrm_steps.py [FOLDER]   (default ../shared/golden_samplers)
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
import test_equivalence as eq  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "golden_samplers"
    model = eq.golden_unet(torch.float32)
    for name in ("ddrm_sr4_bicubic", "ddrm_deblur_gauss"):
        case = torch.load(folder / f"{name}.pt", weights_only=True)
        op, sampler, n = eq.operator(case), eq.build_sampler(**case["sampler"]), len(case["timesteps"])
        worst_x = worst_x0 = 0.0
        for k in range(n):
            x = case["x_init"] if k == 0 else case["x_t"][k - 1]
            draws = [d["tensor"] for d in case["draws"] if d["step"] == k and d["used"]]
            with pytest.MonkeyPatch.context() as mp:
                x_next, x0 = eq.with_tape(mp, draws, lambda g: sampler.step(
                    model, x, torch.full((1,), n - 1 - k), op, case["y"], case["sigma"], g))
            worst_x, worst_x0 = max(worst_x, eq.rel(x_next, case["x_t"][k])), max(worst_x0, eq.rel(x0, case["x0_hat"][k]))
        states = []
        draws = [d["tensor"] for d in case["draws"] if d["used"] and "measurement" not in d["role"]]
        with pytest.MonkeyPatch.context() as mp:
            out = eq.with_tape(mp, draws, lambda g: sampler.sample(
                model, op, case["y"], sigma=case["sigma"], shape=case["image"].shape, generator=g,
                callback=lambda i, x, x0: states.append(x.clone())))
        chain = max(eq.rel(x, case["x_t"][k]) for k, x in enumerate(states))
        image = ((out + 1) / 2).clamp(0, 1).sub(case["output_01"]).abs().max().item()
        print(f"{name}: teacher forcing worst x_t {worst_x:.1e}, x0_hat {worst_x0:.1e}; chain worst x_t {chain:.1e}, "
              f"output {eq.rel(out, case['output']):.2e}, output_01 max abs {image:.1e}", flush=True)


if __name__ == "__main__":
    main()
