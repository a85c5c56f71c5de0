"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023, arXiv 2209.14687), as its code runs it."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from guided_diffusion.diffusion import Generators, Model
from guided_diffusion.guidance import ancestral_step_and_gradient

from .base import Sampler, register
from .params import Param


NOISE_MODELS = ("gaussian", "poisson")
NOISE_MODEL_SAMPLERS = ("dps", "dpps")  # samplers with a noise_model parameter


def check_noise_model(noise_model: str) -> None:
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"noise_model must be one of {NOISE_MODELS}, got {noise_model!r}")


def with_noise_model(params: Mapping[str, Any], noise: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A copy of a `sampler` config block ({"name": ..., params}) with `noise_model` filled in from
    the task's noise block ({"name": "gaussian" | "poisson" | "clean", ...}, None = clean), for
    samplers whose loss depends on it (`NOISE_MODEL_SAMPLERS`), as the official DPS code picks its
    loss from the measurement's noiser. A `noise_model` the block sets is kept; other samplers'
    blocks are returned unchanged."""
    out = dict(params)
    if "noise_model" in out or out.get("name") not in NOISE_MODEL_SAMPLERS:
        return out
    out["noise_model"] = "poisson" if (noise or {}).get("name") == "poisson" else "gaussian"
    return out


@register("dps")
class DPS(Sampler):
    """Algorithm 1 of the paper with the official code's step rule.

    Each step: x'_{t-1} = mu(x_t, x0_hat) + sigma_t z (ancestral, learned-range variance) and
    x_{t-1} = x'_{t-1} - scale * grad_{x_t} ||y - A(x0_hat(x_t))||.
    Paper vs code: Alg. 1 steps on the squared norm with zeta_t = zeta' / ||y - A x0_hat||
    (App. C.2); the code's constant `scale` on the un-squared norm is that rule with
    zeta' = scale / 2. The released configs use scale 0.3 (SR, deblur), 0.5 (inpainting),
    1.0 (phase retrieval). x0_hat is clamped to [-1, 1] inside the graph (clip_denoised).
    noise_model: the loss weighting of the code's noise model, "gaussian" (the norm) or "poisson"
    (the norm divided by |y| elementwise, averaged); `with_noise_model` derives it from a task's
    noise block.
    """

    param_specs = {"scale": Param(float, low=0.0), "noise_model": Param(str, choices=NOISE_MODELS)}

    def __init__(self, scale: float = 1.0, noise_model: str = "gaussian", **kwargs: Any):
        check_noise_model(noise_model)
        self.scale = float(scale)
        self.noise_model = noise_model
        super().__init__(**kwargs)

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        # Eq. (16)/(17) of the paper: prior step first, then the measurement step.
        x_prev, grad, out = ancestral_step_and_gradient(self.diffusion, model, x_t, t, op, y, generator,
                                                        self.clip_denoised, self.var_type, self.noise_model)
        return x_prev - self.scale * grad, out["x0_hat"]
