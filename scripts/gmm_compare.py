"""Samplers against an exact posterior: `python scripts/gmm_compare.py [--samplers dps dpps] [--steps 200]`.

The prior is the analytic Gaussian mixture of guided_diffusion/analytic.py (3 components, images
3x4x4), whose denoiser and posterior p(x | y) are exact. For three linear measurements (half the
pixels, 2x average pooling, a 16x48 Gaussian matrix; sigma_y = 0.05) each sampler draws N samples
for one y and the table reports the sliced Wasserstein distance (SWD) to N exact posterior
samples. Two reference rows bracket it: the SWD between two exact posterior sample sets (the
finite-sample floor) and the SWD of prior samples (ignoring y). Lower is better; equal `--steps`
means equal network evaluations for every sampler. Seeds are fixed: the table is reproducible.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from guided_diffusion.analytic import linear_problems, sliced_wasserstein  # noqa: E402
from samplers import build_sampler  # noqa: E402

SHAPE, SIGMA = (3, 4, 4), 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["dps", "dpps"])
    parser.add_argument("--scales", nargs="+", type=float, default=[0.3, 1.0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("-n", type=int, default=1000, help="samples per sampler")
    args = parser.parse_args()
    model, problems = linear_problems(SIGMA, SHAPE)
    rows = {"exact posterior (finite-sample floor)": [], "prior, ignoring y": []}
    for op, y, post in problems.values():
        ref = post.sample(args.n, torch.Generator().manual_seed(1))
        rows["exact posterior (finite-sample floor)"].append(
            sliced_wasserstein(ref, post.sample(args.n, torch.Generator().manual_seed(2))))
        rows["prior, ignoring y"].append(
            sliced_wasserstein(ref, model.prior.sample(args.n, torch.Generator().manual_seed(3))))
        for name in args.samplers:
            for scale in args.scales:
                sampler = build_sampler(name, scale=scale, steps=args.steps, clip_denoised=False)
                x = sampler.sample(model, op, y.expand(args.n, -1), sigma=SIGMA, shape=(args.n, *SHAPE),
                                   generator=torch.Generator().manual_seed(4), dtype=torch.float64)
                rows.setdefault(f"{name}, scale {scale:g}, {args.steps} steps", []).append(sliced_wasserstein(x, ref))
    print(f"SWD to the exact posterior, N = {args.n}, sigma_y = {SIGMA}, torch {torch.__version__}\n")
    names = ("inpainting (24 of 48)", "2x average pooling", "Gaussian 16x48")
    print("| sampler | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for key, values in rows.items():
        print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) + " |")


if __name__ == "__main__":
    main()
