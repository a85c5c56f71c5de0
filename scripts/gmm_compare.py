"""Samplers against an exact posterior: `python scripts/gmm_compare.py [--samplers dps dpps reddiff daps mcg dpir] [--steps 200]`.

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

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

import torch  # noqa: E402

from guided_diffusion.analytic import linear_problems, sliced_wasserstein  # noqa: E402
from runs.cli import exit_status  # noqa: E402
from samplers import build_sampler  # noqa: E402

SHAPE, SIGMA = (3, 4, 4), 0.05
# Samplers without a `scale`: one row each, at the settings of their tests (tests/test_<name>.py).
FIXED = {
    "reddiff": ({"steps": 1000, "lr": 0.1, "lambda_": 0.25}, "lr 0.1, lambda 0.25, 1000 steps"),
    "daps": ({"steps": 50, "langevin_steps": 50, "tau": 2 ** 0.5 * SIGMA, "lr": 2e-3, "lr_min_ratio": 0.05,
              "sigma_min": 0.02, "ode_sigma_min": 0.002}, "50 x 5 x 50 steps, tau sqrt(2) sigma_y, lr 2e-3"),
    # DPIR is deterministic: its N "samples" are N copies of one estimate (a point mass, not a posterior).
    "dpir": ({"steps": 24, "denoiser": "diffusion", "clip_denoised": False}, "24 iterations, the exact GMM denoiser"),
    "ddrm": ({"steps": 20}, "eta 0.85, eta_b 1, 20 steps (official)"),
    # DDNM: the official simplified path's noise level and the DDIM one (variant corrected).
    "ddnm": [({"steps": 100}, "simplified (official), eta 0.85, 100 steps"),
             ({"steps": 100, "variant": "corrected"}, "corrected, eta 0.85, 100 steps")],
    # PiGDM: the official pseudoinverse form and the paper's noise-aware one, weight 1, eta 1.
    "pgdm": [({"steps": 100}, "pinv (official), 100 steps"), ({"steps": 100, "guidance": "noisy"}, "noisy, 100 steps")],
}


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
            fixed = FIXED.get(name)
            runs = ([(params, f"{name}, {label}") for params, label in (fixed if isinstance(fixed, list) else [fixed])]
                    if fixed else
                    [({"scale": scale, "steps": args.steps, "clip_denoised": False}, f"{name}, scale {scale:g}, {args.steps} steps")
                     for scale in args.scales])
            for params, label in runs:
                sampler = build_sampler(name, **params)
                x = sampler.sample(model, op, y.expand(args.n, -1), sigma=SIGMA, shape=(args.n, *SHAPE),
                                   generator=torch.Generator().manual_seed(4), dtype=torch.float64)
                rows.setdefault(label, []).append(sliced_wasserstein(x, ref))
    print(f"SWD to the exact posterior, N = {args.n}, sigma_y = {SIGMA}, torch {torch.__version__}\n")
    names = ("inpainting (24 of 48)", "2x average pooling", "Gaussian 16x48")
    print("| sampler | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for key, values in rows.items():
        print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) + " |")


if __name__ == "__main__":
    sys.exit(exit_status(lambda: main() or 0, resume="it writes nothing; run it again"))
