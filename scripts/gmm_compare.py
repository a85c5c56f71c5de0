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
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from guided_diffusion.analytic import GaussianMixture, GaussianMixtureDenoiser, sliced_wasserstein  # noqa: E402
from guided_diffusion.diffusion import GaussianDiffusion  # noqa: E402
from operators import MatrixOperator  # noqa: E402
from operators.dense import avgpool_matrix_2d, selection_matrix  # noqa: E402
from samplers import build_sampler  # noqa: E402

SHAPE, SIGMA = (3, 4, 4), 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["dps", "dpps"])
    parser.add_argument("--scales", nargs="+", type=float, default=[0.3, 1.0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("-n", type=int, default=1000, help="samples per sampler")
    args = parser.parse_args()
    d = math.prod(SHAPE)
    prior = GaussianMixture.random(SHAPE, 3, torch.Generator().manual_seed(0))
    model = GaussianMixtureDenoiser(prior, GaussianDiffusion.from_config().alphas_cumprod)
    g = torch.Generator().manual_seed(5)
    x_true = prior.sample(1, g)
    problems = {"inpainting (24 of 48)": selection_matrix(d, torch.randperm(d, generator=g)[:24]),
                "2x average pooling": avgpool_matrix_2d(SHAPE, 2),
                "Gaussian 16x48": torch.randn(16, d, generator=g, dtype=torch.float64) / math.sqrt(d)}
    rows = {"exact posterior (finite-sample floor)": [], "prior, ignoring y": []}
    for A in problems.values():
        op = MatrixOperator(A, SHAPE)
        y = op(x_true) + SIGMA * torch.randn(1, A.shape[0], generator=g, dtype=torch.float64)
        post = prior.posterior(A, y[0], SIGMA)
        ref = post.sample(args.n, torch.Generator().manual_seed(1))
        rows["exact posterior (finite-sample floor)"].append(
            sliced_wasserstein(ref, post.sample(args.n, torch.Generator().manual_seed(2))))
        rows["prior, ignoring y"].append(sliced_wasserstein(ref, prior.sample(args.n, torch.Generator().manual_seed(3))))
        for name in args.samplers:
            for scale in args.scales:
                sampler = build_sampler(name, scale=scale, steps=args.steps, clip_denoised=False)
                x = sampler.sample(model, op, y.expand(args.n, -1), sigma=SIGMA, shape=(args.n, *SHAPE),
                                   generator=torch.Generator().manual_seed(4), dtype=torch.float64)
                rows.setdefault(f"{name}, scale {scale:g}, {args.steps} steps", []).append(sliced_wasserstein(x, ref))
    print(f"SWD to the exact posterior, N = {args.n}, sigma_y = {SIGMA}, torch {torch.__version__}\n")
    print("| sampler | " + " | ".join(problems) + " |\n|---|" + "---:|" * len(problems))
    for key, values in rows.items():
        print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) + " |")


if __name__ == "__main__":
    main()
