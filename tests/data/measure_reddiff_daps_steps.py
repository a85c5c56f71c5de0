"""RED-diff's and DAPS's states against the full golden files: the output and, along the whole chain,
the worst per-step state (RED-diff: mu = x_t[k] and x0_pred[k]; DAPS: x_t[k] and x0_y[k]), with the
stored `used` draws served to torch.randn as the zoo check does. The numbers docs/methods/reddiff.md,
docs/methods/daps.md and docs/equivalence.md quote:

    OMP_NUM_THREADS=1 python tests/data/measure_reddiff_daps_steps.py [--folder FOLDER] [--device cuda [--tf32]]

FOLDER defaults to ../shared/golden_samplers (tests/data/golden_samplers works too: the trimmed files
keep the outputs but not the per-step states, so only the output column is printed then). On CUDA the
network, operator and y move to the device (draws stay on the CPU generator); cuDNN's TF32
convolutions, PyTorch's default, stay off unless --tf32.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
import test_equivalence as eq  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "golden_samplers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tf32", action="store_true", help="allow cuDNN's TF32 convolutions (PyTorch's default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    model = eq.golden_unet(torch.float32).to(device)
    for name in ("reddiff_sr4", "reddiff_inpaint_random", "daps_sr4", "daps_inpaint_box"):
        case = torch.load(args.folder / f"{name}.pt", weights_only=True)
        op, sampler, n = eq.operator(case).to(device), eq.build_sampler(**case["sampler"]), len(case["timesteps"])
        draws = [d["tensor"] for d in eq.official_draws(name)
                 if d["used"] and "measurement" not in d["role"] and "data_noise" not in d["role"]]
        seen = {}
        generator = torch.Generator()
        tape = eq.Tape(draws, generator)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "randn", tape)
            out = sampler.sample(model, op, case["y"].to(device), sigma=case["sigma"], shape=case["image"].shape,
                                 generator=generator,
                                 callback=lambda i, x, x0: seen.__setitem__(n - 1 - i, (x[:, :3].cpu(), x0.cpu())))
        line = f"{name} ({device}): output {eq.rel(out.cpu(), case['output']):.2g}"
        if "x_t" in case:
            second = "x0_pred" if "x0_pred" in case else "x0_y"
            worst_x = max(eq.rel(seen[k][0], case["x_t"][k]) for k in range(n))
            worst_second = max(eq.rel(seen[k][1], case[second][k]) for k in range(n))
            line += (f"; worst x_t over {n} steps {worst_x:.2g}; worst {second} {worst_second:.2g}; "
                     f"official one-ulp sensitivity {case['official_1ulp_sensitivity']:.2g}")
        if "mu_final" in case:
            line += f"; the official output vs the final mu {eq.rel(case['mu_final'], case['output']):.2g}"
        print(line)


if __name__ == "__main__":
    main()
