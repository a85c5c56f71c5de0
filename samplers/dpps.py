"""DPPS: Diffusion Posterior Proximal Sampling (Wu et al., ACM MM 2024, arXiv 2402.16907), as its code."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from guided_diffusion.diffusion import Generators, Model, randn
from guided_diffusion.guidance import residual_norm_gradient

from .base import Sampler, register
from .dps import NOISE_MODELS, check_noise_model
from .params import Param


@register("dpps")
class DPPS(Sampler):
    """DPS's gradient step on the mean, then the proximal choice among n_t candidate noises.

    Per step (code of v2 / ACM MM):
      mu' = mu(x_t, x0_hat) - scale * grad_{x_t} ||y - A x0_hat||;
      n_t = floor(max(n_max (1 - exp(-SNR_t)), 2)), SNR_t = abar_t / (1 - abar_t);
      candidates x_i = mu' + sigma_t z_i; keep the i minimising
      ||sqrt(abar_{t-1}) y - A(x_i - sqrt(1 - abar_{t-1}) eps_hat)||, eps_hat the network's eps at x_t
      (not re-evaluated per candidate); at t = 0 the result is mu'.
    Start (`aligned_init`): x_T = sqrt(abar_T) U(y) + sqrt(1 - abar_T) z, U = y itself when y has
    the image size, nearest upsampling by an integer factor otherwise (SR). With the linear
    schedule sqrt(abar_T) = 0.0064, so x_T is ~99% noise. Where y is not image-like (phase
    retrieval, where the code breaks), the start is plain noise.
    Selection is per image when batched (the code assumes batch 1).
    noise_model: the gradient step's loss weighting, as DPS ("gaussian" or "poisson", see
    `samplers.dps.with_noise_model`); the candidate distance is the plain norm either way.
    """

    param_specs = {"scale": Param(float, low=0.0), "n_max": Param(int, low=2), "aligned_init": Param(bool),
                   "noise_model": Param(str, choices=NOISE_MODELS)}

    def __init__(self, scale: float = 1.0, n_max: int = 50, aligned_init: bool = True, noise_model: str = "gaussian",
                 **kwargs: Any):
        if int(n_max) < 2:
            raise ValueError(f"n_max must be >= 2, got {n_max}")
        check_noise_model(noise_model)
        self.noise_model = noise_model
        self.scale, self.n_max, self.aligned_init = float(scale), int(n_max), bool(aligned_init)
        super().__init__(**kwargs)

    def n_candidates(self, i: int) -> int:
        """n_t for grid index i (eq. of the SNR-adaptive candidate count)."""
        ac = float(self.diffusion.alphas_cumprod[i])
        return int(math.floor(max(self.n_max * (1 - math.exp(-ac / (1 - ac))), 2)))

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        noise = randn(shape, generator, device, dtype)
        if not self.aligned_init or y is None or y.dim() != 4 or y.shape[1] != shape[1]:
            return noise
        factor = shape[-1] // y.shape[-1]
        if factor < 1 or y.shape[-1] * factor != shape[-1] or y.shape[-2] * factor != shape[-2]:
            return noise
        up = y if factor == 1 else F.interpolate(y, scale_factor=factor, mode="nearest")
        ac = self.diffusion.alphas_cumprod[-1].item()
        return math.sqrt(ac) * up.to(dtype) + math.sqrt(1 - ac) * noise

    def select(self, candidates: torch.Tensor, op: Any, target: torch.Tensor,
               offset: torch.Tensor) -> torch.Tensor:
        """candidates (B, n, C, H, W) -> (B, C, H, W): per image, the candidate minimising
        ||target - A(candidate - offset)||. The operator sees batches of B (its per-image state,
        e.g. masks, stays aligned)."""
        dists = torch.stack([(target - op.forward(candidates[:, j] - offset)).flatten(1).norm(dim=1)
                             for j in range(candidates.shape[1])], dim=1)
        best = dists.argmin(dim=1)
        return candidates[torch.arange(len(best), device=best.device), best]

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
            grad, _ = residual_norm_gradient(op, y, x_t, out["x0_hat"], self.noise_model)
        mean = (out["mean"] - self.scale * grad).detach()
        x0_hat, eps = out["x0_hat"].detach(), out["eps"].detach()
        i = int(t[0])
        if i == 0:
            return mean, x0_hat
        std = torch.exp(0.5 * out["log_variance"].detach())
        n = self.n_candidates(i)
        z = randn((x_t.shape[0], n, *x_t.shape[1:]), generator, x_t.device, x_t.dtype)
        candidates = mean[:, None] + std[:, None] * z
        ac_prev = self.diffusion.alphas_cumprod_prev[i].item()
        x_prev = self.select(candidates, op, math.sqrt(ac_prev) * y, math.sqrt(1 - ac_prev) * eps)
        return x_prev, x0_hat
