"""DDRM: Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song; NeurIPS 2022, arXiv 2201.11793),
as the official code (bahjat-kawar/ddrm, ``functions/denoising.py`` ``efficient_generalized_steps``,
L11-106) runs it.

Everything happens in the spectral space of the operator, ``A = U diag(s) V^T`` (``op.svd``,
operators/svd.py): ``ybar = U^T y``, ``xbar = V^T x``, and the variance-exploding noise level
``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``. Per visited step t -> t' (sigma' = sigma_t'):
  1. x0 = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t), not clamped (L62);
  2. per V-space entry i (L73-96), with c = sqrt(sigma'^2 - (eta sigma')^2):
     missing (i >= n, or s_i sigma' == sigma_y): xbar'_i = xbar0_i + c Vt(eps)_i + eta sigma' z;
     after   (s_i sigma' < sigma_y):  xbar'_i = xbar0_i + c (ybar_i - s_i xbar0_i) / sigma_y + eta sigma' z;
     before  (s_i sigma' > sigma_y):  xbar'_i = eta_b ybar_i / s_i + (1 - eta_b) xbar0_i
                                                + sqrt(sigma'^2 - sigma_y^2 eta_b^2 / s_i^2) z;
  3. x_t' = sqrt(abar_t') V(xbar')  (L99-100).
Start (L14-39): for s_i sigma_T > sigma_y, xbar_T,i = ybar_i / s_i + sqrt(sigma_T^2 -
sigma_y^2 / s_i^2) z_i, else sigma_T z_i; x_T = V(xbar_T) / sigma_T (the official scale: the exact
start would be sqrt(abar_T) V(xbar_T), larger by 1 / sqrt(1 - abar_T)).
Code details kept: visited timesteps ``range(0, T, T // steps)`` (20 steps: 950, 900, ..., 0; more
than `steps` when T // steps does not divide T) with t' = -1 (abar = 1, sigma' = 0) after t = 0;
abar(t) = ``compute_alpha`` (L6-9), cumprod of 1 - betas in the working dtype (float32: the official
values bit for bit); zero singular values inside ``s`` (only ``ddrm_deblurring`` has them) are
"after" entries when sigma_y > 0; the output is the last state, unclamped. Noise: the three
official draws per step, in the official order and shapes ((B, D) missing, (B, n_after) after,
(B, n) before, each taken only where it reaches the output). The paper's equation numbers were not
re-read for this file, so the official code's lines are cited instead.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model, get_named_beta_schedule, randn
from operators.svd import svd_problem

from .base import Sampler, register
from .params import Param


@register("ddrm")
class DDRM(Sampler):
    """DDRM's efficient generalized steps in the operator's SVD basis.

    eta: eta_A = eta_C of the code (share of fresh noise, 0.85); eta_b: eta_B (1.0: the "before"
    entries ignore x0); steps: the code's --timesteps (20); clip_denoised: False as the code (True
    clamps x0, which the code never does). `sigma` given to `sample` is the measurement std on
    [-1, 1] (the code's sigma_0 = 2 x its --sigma_0).
    """

    param_specs = {"eta": Param(float, low=0.0, high=1.0), "eta_b": Param(float, low=0.0, high=1.0)}

    def __init__(self, eta: float = 0.85, eta_b: float = 1.0, steps: int = 20, clip_denoised: bool = False,
                 schedule: str = "linear", num_train_timesteps: int = 1000,
                 timestep_respacing: Optional[str] = None, **kwargs: Any):
        self.eta, self.eta_b = float(eta), float(eta_b)
        super().__init__(steps=steps, clip_denoised=clip_denoised, schedule=schedule,
                         num_train_timesteps=num_train_timesteps, timestep_respacing=timestep_respacing, **kwargs)
        self.train_betas = get_named_beta_schedule(schedule, num_train_timesteps)
        if timestep_respacing is None:  # runners/diffusion.py:333-338: seq = range(0, T, T // steps)
            seq = range(0, num_train_timesteps, num_train_timesteps // self.steps)
            self.diffusion = GaussianDiffusion.respaced(self.train_betas, seq)

    def check_task(self, op: Any) -> None:
        problem = svd_problem(op)
        if problem is not None:
            raise ValueError(f"ddrm works in the operator's SVD basis; {problem}")

    def abar(self, t: int, dtype: torch.dtype) -> torch.Tensor:
        """compute_alpha (L6-9): cumprod(1 - cat([0], betas))[t + 1] in `dtype`; abar(-1) = 1."""
        betas = torch.cat([torch.zeros(1, dtype=dtype), self.train_betas.to(dtype)])
        return torch.cumprod(1 - betas, 0)[t + 1]

    def sigma_bar(self, a: torch.Tensor) -> torch.Tensor:
        """The VE noise level sqrt(1 - abar) / sqrt(abar)."""
        return (1 - a).sqrt() / a.sqrt()

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """x_T = V(xbar_T) / sigma_T from the one draw z (B, C, H, W), read as V-space vector (L14-39)."""
        z = randn(shape, generator, device, dtype).reshape(shape[0], -1)
        svd = op.svd(shape, device, dtype)
        s = svd.singulars
        sigma_T = self.sigma_bar(self.abar(int(self.diffusion.timestep_map[-1]), dtype)).to(device)
        measured = s * sigma_T > sigma
        mean = z.new_zeros(z.shape)
        std = torch.full((z.shape[1],), float(sigma_T), dtype=dtype, device=device)
        s_m = s[measured]
        mean[:, :len(s)][:, measured] = svd.Ut(y.to(dtype))[:, measured] / s_m
        std[:len(s)][measured] = (sigma_T ** 2 - (sigma / s_m) ** 2).clamp_min(0).sqrt()
        return svd.V((mean + std * z) / sigma_T)

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        i = int(t[0])
        t_now = int(self.diffusion.timestep_map[i])
        t_next = int(self.diffusion.timestep_map[i - 1]) if i > 0 else -1
        dtype, device, b = x_t.dtype, x_t.device, x_t.shape[0]
        a, a_next = self.abar(t_now, dtype).to(device), self.abar(t_next, dtype).to(device)
        # 1. x0 from the network's eps (first C channels; a learned variance is ignored, L59-62).
        with torch.no_grad():
            eps = model(x_t, self.diffusion.model_t(t))[:, :x_t.shape[1]]
        x0 = (x_t - eps * (1 - a).sqrt()) / a.sqrt()
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        # 2. the three cases in V-space (L73-96).
        svd = op.svd(x_t.shape, device, dtype)
        s, n = svd.singulars, len(svd.singulars)
        sigma_next = float(self.sigma_bar(a_next))
        v0, ybar = svd.Vt(x0), svd.Ut(y.to(dtype))
        before, after = s * sigma_next > sigma, s * sigma_next < sigma
        missing = torch.ones(v0.shape[1], dtype=torch.bool, device=device)
        missing[:n] = ~(before | after)
        noise_std = self.eta * sigma_next
        c = math.sqrt(sigma_next ** 2 - noise_std ** 2)
        v = v0 + c * svd.Vt(eps)
        if noise_std > 0 and bool(missing.any()):
            v = v + noise_std * randn(v.shape, generator, device, dtype)
        measured = v[:, :n]
        if bool(after.any()):
            pull = (ybar - s * v0[:, :n])[:, after] / sigma
            measured[:, after] = v0[:, :n][:, after] + c * pull
            if noise_std > 0:
                measured[:, after] += noise_std * randn((b, int(after.sum())), generator, device, dtype)
        if bool(before.any()):
            s_b = s[before]
            std_b = (sigma_next ** 2 - (sigma * self.eta_b / s_b) ** 2).sqrt()
            z_b = randn((b, n), generator, device, dtype)[:, before]
            measured[:, before] = self.eta_b * ybar[:, before] / s_b + (1 - self.eta_b) * v0[:, :n][:, before] + std_b * z_b
        # 3. back to pixels on the x_t scale.
        return a_next.sqrt() * svd.V(v), x0
