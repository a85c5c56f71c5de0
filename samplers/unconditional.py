"""Unconditional ADM sampling: the ancestral DDPM step and DDIM. They ignore the measurement, which
makes them the prior baseline every restoration sampler must beat."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from guided_diffusion.diffusion import Generators, Model, randn_like

from .base import Sampler, register
from .params import Param


@register("ddpm")
class DDPM(Sampler):
    """Ancestral sampling x_{t-1} ~ N(mu(x_t, x0_hat), sigma_t^2) (Ho et al. 2020, Alg. 2)."""

    needs_operator = False

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
        x_prev = self.diffusion.ddpm_step(out["mean"], out["log_variance"], t, randn_like(x_t, generator))
        return x_prev, out["x0_hat"]


@register("ddim")
class DDIM(Sampler):
    """DDIM (Song et al. 2021, eq. 12) on the strided grid "ddim{steps}"; eta = 0 is deterministic.

    As ADM does, eps is recomputed from the clipped x0_hat so both terms of the step agree.
    """

    needs_operator = False
    # eta <= 1 keeps sigma_t^2 <= 1 - abar_{t-1}, the square root in eq. 12 real.
    param_specs = {"eta": Param(float, low=0.0, high=1.0)}

    def __init__(self, eta: float = 0.0, **kwargs: Any):
        self.eta = float(eta)
        super().__init__(**kwargs)

    def default_respacing(self) -> str:
        return f"ddim{self.steps}"

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
        eps = self.diffusion.predict_eps_from_x0(x_t, t, out["x0_hat"])
        noise = randn_like(x_t, generator) if self.eta > 0 else None
        return self.diffusion.ddim_step(out["x0_hat"], eps, t, self.eta, noise), out["x0_hat"]
