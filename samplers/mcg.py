"""MCG: Manifold Constrained Gradients (Chung, Sim, Ryu & Ye, NeurIPS 2022, arXiv 2206.00941), as the
official code (HJ-harry/MCG_diffusion@d5bfd15, ADM path: guided_diffusion/gaussian_diffusion.py
p_sample_loop_progressive, branch sample_method "MCG", L528-556) runs it.

Per step at grid index t (one network call, with autograd through it):
  1. ancestral step   x' = mu(x_t, x0_hat) + exp(log_var / 2) z_anc      (learned-range variance;
                      x0_hat clamped to [-1, 1] inside the graph; no noise at t = 0);
  2. MCG gradient     g = grad_{x_t} ||y - A x0_hat(x_t)||                (un-squared norm, step `scale`);
  3. projection       x_{t-1} = (I - P)(x' - scale g) + A^+ (sqrt(abar_t) y + sqrt(1 - abar_t) A z_y),
                      P = A^+ A, with y noised to the level of x_t (the same t as the network call).
Inpainting (A = mask, the only task of the official ADM path) makes step 3 the code's
x' (1 - m) - g (1 - m) + q_sample(y, t) m. Paper vs code (golden README "MCG", traps): the paper
steps on the squared norm ||W(y - H x0_hat)||^2 with alpha; the code's fixed step 1 on the
un-squared norm is that rule with alpha_i = 1 / (2 ||y - H x0_hat||). The observed pixels of the
output are sqrt(abar_0) y + sqrt(1 - abar_0) z_y, not y. The code has no measurement-noise model:
with sigma > 0 the projection pastes the noisy y (as the DPS paper's MCG baseline does).
Beyond the official code: other linear operators use the paper's general projection with
`op.pinv` (A^+) as written in step 3; it was checked on the Gaussian-mixture prior only
(tests/test_mcg.py), not against any official run.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from guided_diffusion.diffusion import Generators, Model, randn_like
from guided_diffusion.guidance import ancestral_step_and_gradient

from .base import Sampler, register
from .params import Param


@register("mcg")
class MCG(Sampler):
    """MCG over the shared loop (respaced ancestral steps, as the code's `--timestep_respacing`).

    scale: the step on the un-squared residual norm (the code hard-codes 1.0); steps: the
    respaced grid (the code's run_inpainting.sh: 1000). Draws per step: the ancestral z, then z_y
    (image-shaped, both at every step, the last included).
    """

    param_specs = {"scale": Param(float, low=0.0)}

    def __init__(self, scale: float = 1.0, **kwargs: Any):
        self.scale = float(scale)
        super().__init__(**kwargs)

    def check_task(self, op: Any) -> None:
        if op is not None and not getattr(op, "is_linear", False):
            raise ValueError(f"mcg's projection needs a linear operator with a pseudo-inverse; "
                             f"{getattr(op, 'name', type(op).__name__)!r} is nonlinear (use dps or dpps)")

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        # 1. ancestral step (the code's p_sample, L428-445) and 2. the manifold-constrained gradient
        # through the network and the clamp (L552-554), from one model call.
        x_prior, grad, out = ancestral_step_and_gradient(self.diffusion, model, x_t, t, op, y, generator,
                                                         self.clip_denoised, self.var_type)
        x = x_prior - self.scale * grad
        # 3. projection onto {x : A x = y_t}, y_t = y noised to the level of x_t (L555-556).
        y_t = self.diffusion.q_sample(y, t, op.forward(randn_like(x, generator)))
        return x - op.pinv(op.forward(x)) + op.pinv(y_t), out["x0_hat"]
