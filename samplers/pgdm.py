"""PiGDM: Pseudoinverse-Guided Diffusion Models for Inverse Problems (Song, Vahdat, Mardani and Kautz,
ICLR 2023), as NVlabs/RED-diff@66482f2 `algos/pgdm.py` runs it (the authors released no code).

A DDIM step whose x0 prediction is pushed along the vector-Jacobian product of the network:
    g = (d x0_hat / d x_t)^T v,
  guidance "pinv" (the code, the paper's noiseless form): v = A^+ y - A^+ A x0_hat;
  guidance "noisy" (the paper's form for y = A x + sigma_y n; no official code):
      v = A^T (r_t^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat),  r_t^2 = 1 - abar_t,
  so that g approximates grad_{x_t} log p(y | x_t) with p(x0 | x_t) ~ N(x0_hat, r_t^2 I).
Per step t -> s (a = abar_t, a' = abar_s; code L36-99):
  1. eps = model(x_t, t), x0 = (x_t - sqrt(1 - a) eps) / sqrt(a), not clamped (clip_denoised false);
  2. g by one VJP through the network;  the guidance moves x0 by d = scale kappa_t g with
     kappa_t = sqrt(a) (the code's weight) for "pinv" and sqrt(a) r_t^2 for "noisy": the same weight
     on r_t^2 A^T (r_t^2 A A^T + sigma_y^2 I)^{-1}, which is A^+ for sigma_y = 0, so the two forms
     agree on noiseless y (the paper's own step weight was not re-read here);
  3. replace_observed (the code's in2 inpainting, L88-90): x0 <- (I - A^+ A) x0 + A^+ y and
     g <- (I - A^+ A) g (for a 0/1 mask: x0 (1 - m) + y m and g (1 - m), bit for bit);
  4. c1 = eta sqrt((1 - a / a')(1 - a') / (1 - a)), c2 = sqrt(1 - a' - c1^2) (DDIM, L41-42);
     adaptive_weight true (the code's awd): x_s = sqrt(a') (x0 + d) + c1 z + c2 eps;
     false: eps is recomputed from the guided x0, x_s = sqrt(a') (x0 + d) + c1 z + c2 (x_t - sqrt(a) (x0 + d)) / sqrt(1 - a).
Start ("pinv", L103-112): x_T = sqrt(abar_T) A^+ y + sqrt(1 - abar_T) z. Grid: range(0, T, T // steps)
(utils/functions.py:20-24), high to low, the last step to abar = 1.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model, get_named_beta_schedule, randn, randn_like
from operators.linalg import conjugate_gradient

from .base import Sampler, register
from .params import Param

GUIDANCES = ("pinv", "noisy")
STARTS = ("pinv", "noise")


def solve_measurement_covariance(op: Any, r: torch.Tensor, r2: float, sigma_y: float) -> torch.Tensor:
    """u = (r2 A A^T + sigma_y^2 I)^{-1} r for measurements r (the shape of y), by conjugate gradient
    on the operator (A A^T applied as op.forward(op.transpose(.))); tolerance 1e-10 relative in
    float64, 1e-6 otherwise. With sigma_y = 0 the system is singular where A A^T is (e.g. the
    missing pixels of an image-shaped inpainting y); CG from 0 on a right-hand side in the range of
    A, as r = y - A x0 is for noiseless y, returns the minimum-norm solution."""
    tol = 1e-10 if r.dtype == torch.float64 else 1e-6
    return conjugate_gradient(lambda u: r2 * op.forward(op.transpose(u)) + sigma_y ** 2 * u, r, torch.zeros_like(r),
                              tol=tol, max_iter=1000)


@register("pgdm")
class PiGDM(Sampler):
    """PiGDM over the shared loop: one network call and one VJP per step.

    steps: the code's exp.num_steps (grid range(0, T, T // steps), so steps + 1 points when T % steps
    is not 0, as the code's); eta: the DDIM eta (the official scripts 1.0, the yaml 0.0); scale: the
    code's grad_term_weight (1.0); adaptive_weight: the code's awd (true); replace_observed: the in2
    inpainting step (true in the code only for in2_* degradations); start: "pinv" (the code) or
    "noise"; guidance: "pinv" (the code) or "noisy" (module docstring); clip_denoised: clamp x0_hat
    inside the graph (the code does not). `sigma` given to `sample` is the measurement std on
    [-1, 1] (the code's 2 algo.sigma_y); only the "noisy" guidance reads it.
    timestep_respacing: use a respacing string instead of the code's grid (the golden files'
    "ddim50" is the same grid).
    """

    param_specs = {"eta": Param(float, low=0.0, high=1.0), "scale": Param(float, low=0.0),
                   "adaptive_weight": Param(bool), "replace_observed": Param(bool),
                   "start": Param(str, choices=STARTS), "guidance": Param(str, choices=GUIDANCES)}

    def __init__(self, steps: int = 100, eta: float = 1.0, scale: float = 1.0, adaptive_weight: bool = True,
                 replace_observed: bool = False, start: str = "pinv", guidance: str = "pinv",
                 clip_denoised: bool = False, schedule: str = "linear", num_train_timesteps: int = 1000,
                 timestep_respacing: Optional[str] = None, **kwargs: Any):
        if start not in STARTS or guidance not in GUIDANCES:
            raise ValueError(f"start must be one of {STARTS} and guidance one of {GUIDANCES}, got {start!r}, {guidance!r}")
        self.eta, self.scale, self.adaptive_weight = float(eta), float(scale), adaptive_weight
        self.replace_observed, self.start, self.guidance = replace_observed, start, guidance
        super().__init__(steps=steps, schedule=schedule, num_train_timesteps=num_train_timesteps,
                         timestep_respacing=timestep_respacing, clip_denoised=clip_denoised, **kwargs)
        if timestep_respacing is None:
            grid = range(0, num_train_timesteps, num_train_timesteps // self.steps)
            self.diffusion = GaussianDiffusion.respaced(get_named_beta_schedule(schedule, num_train_timesteps), grid)

    def check_task(self, op: Any) -> None:
        if op is None or not getattr(op, "is_linear", False):
            name = getattr(op, "name", None) or type(op).__name__
            raise ValueError(f"pgdm needs a linear operator (A, A^T and A^+); {name!r} is not one")

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """start "pinv": A^+ y noised to the first grid step; "noise": x_T ~ N(0, I)."""
        z = randn(shape, generator, device, dtype)
        if self.start == "noise" or y is None:
            return z
        a = self.diffusion.alphas_cumprod[-1].item()
        return math.sqrt(a) * op.pinv(y).to(dtype) + math.sqrt(1 - a) * z

    def guidance_vector(self, op: Any, y: torch.Tensor, x0: torch.Tensor, a: float, sigma: float) -> torch.Tensor:
        """v of the VJP (module docstring), from the detached x0_hat."""
        if self.guidance == "pinv":
            return op.pinv(y) - op.pinv(op.forward(x0))
        return op.transpose(solve_measurement_covariance(op, y - op.forward(x0), 1 - a, sigma))

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        i = int(t[0])
        a, a_s = self.diffusion.alphas_cumprod[i].item(), self.diffusion.alphas_cumprod_prev[i].item()
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
            eps, x0 = out["eps"].detach(), out["x0_hat"]
            v = self.guidance_vector(op, y, x0.detach(), a, sigma)
            (g,) = torch.autograd.grad(x0, x_t, grad_outputs=v)  # (d x0_hat / d x_t)^T v: one backward pass
        x0, x_t = x0.detach(), x_t.detach()
        kappa = math.sqrt(a) if self.guidance == "pinv" else math.sqrt(a) * (1 - a)  # r_t^2 = 1 - a
        if self.replace_observed:
            x0 = x0 - op.pinv(op.forward(x0)) + op.pinv(y)
            g = g - op.pinv(op.forward(g))
        c1 = self.eta * math.sqrt((1 - a / a_s) * (1 - a_s) / (1 - a))
        c2 = math.sqrt(max(1 - a_s - c1 ** 2, 0.0))
        if self.adaptive_weight:
            coeff = math.sqrt(a_s) * kappa * self.scale
        else:
            eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
            coeff = (math.sqrt(a_s) - c2 * math.sqrt(a) / math.sqrt(1 - a)) * kappa * self.scale
        x_s = math.sqrt(a_s) * x0
        if c1 > 0:  # 0 at the last step (a' = 1) and for eta = 0: nothing is drawn
            x_s = x_s + c1 * randn_like(x_t, generator)
        return x_s + c2 * eps + coeff * g, x0
