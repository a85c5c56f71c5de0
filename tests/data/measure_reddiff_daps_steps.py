"""RED-diff's and DAPS's states against the full golden files: the output and, along the whole chain,
the worst per-step state (RED-diff: mu = x_t[k] and x0_pred[k]; DAPS: x_t[k] and x0_y[k]), with the
stored `used` draws served to torch.randn as the zoo check does. The numbers docs/methods/reddiff.md,
docs/methods/daps.md and docs/equivalence.md quote:

    OMP_NUM_THREADS=1 python tests/data/measure_reddiff_daps_steps.py [FOLDER]   (default ../shared/golden_samplers)
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
    for name in ("reddiff_sr4", "reddiff_inpaint_random", "daps_sr4", "daps_inpaint_box"):
        case = torch.load(folder / f"{name}.pt", weights_only=True)
        op, sampler, n = eq.operator(case), eq.build_sampler(**case["sampler"]), len(case["timesteps"])
        draws = [d["tensor"] for d in case["draws"]
                 if d["used"] and "measurement" not in d["role"] and "data_noise" not in d["role"]]
        seen = {}
        generator = torch.Generator()
        tape = eq.Tape(draws, generator)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "randn", tape)
            out = sampler.sample(model, op, case["y"], sigma=case["sigma"], shape=case["image"].shape, generator=generator,
                                 callback=lambda i, x, x0: seen.__setitem__(n - 1 - i, (x[:, :3].clone(), x0.clone())))
        second = "x0_pred" if "x0_pred" in case else "x0_y"
        worst_x = max(eq.rel(seen[k][0], case["x_t"][k]) for k in range(n))
        worst_second = max(eq.rel(seen[k][1], case[second][k]) for k in range(n))
        line = (f"{name}: output {eq.rel(out, case['output']):.2g}; worst x_t over {n} steps {worst_x:.2g}; "
                f"worst {second} {worst_second:.2g}; official one-ulp sensitivity {case['official_1ulp_sensitivity']:.2g}")
        if "mu_final" in case:
            line += f"; the official output vs the final mu {eq.rel(case['mu_final'], case['output']):.2g}"
        print(line)


if __name__ == "__main__":
    main()
