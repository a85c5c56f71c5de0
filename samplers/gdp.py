"""GDP: Generative Diffusion Prior for Unified Image Restoration and Enhancement (Fei et al., CVPR 2023,
arXiv 2304.01247), as the official code (Fayeben/GenerativeDiffusionPrior, scripts/) runs it.

Full 1000-step ancestral DDPM from x_T ~ N(0, I) whose mean is shifted by a measurement gradient:
  x_{t-1} = mu_theta(x_t) + g + exp(logvar_theta / 2) n   (no noise at t = 0),
  g = -scale grad_v L(v),   L(v) = mean over the measurement of ((A(v) - y) / 2)^2,
with v = x0_hat, the clipped x0 prediction, detached (GDP-x0, `guidance: x0`; the paper's Algorithm 2 as
summarised in the reference notes, not re-read), or
v = x_t itself (GDP-xt, scripts sample_{sr4,blur,color}.py; `guidance: xt`). (A(v) - y) / 2 is the
code's residual on the [0, 1] scale: it compares D((v + 1) / 2) with (y + 1) / 2, and for every
operator here (linear on [-1, 1] data, or the exposure model y = 2 (f x01 + M) - 1) that residual
is exactly half the [-1, 1] one. Losses are per-image means summed over the batch, as the code.
Paper vs code: the paper motivates the step as guided-diffusion's mu + Sigma g; the code adds g
without Sigma (the Adam optimiser in its condition_mean acts on a tensor without gradient and
changes nothing). No gradient goes through the network.
Blind restoration (low-light, HDR): the operator's nn.Parameters (GDP: gain f and map M) take one
plain gradient step (learning rate `param_lr`, code 1) on the same loss at every guided step and
carry over to the next step; the operator keeps the final values.
Colorization adds color_weight * L_color(x0_hat) (Zero-DCE colour-constancy term, code weight 500,
on the [-1, 1] tensor) to the guided objective.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from guided_diffusion.diffusion import Generators, Model, randn_like

from .base import Sampler, register
from .params import Param
from .patches import model_window

GUIDANCE = ("x0", "xt")


def color_constancy_loss(x: torch.Tensor) -> torch.Tensor:
    """Zero-DCE L_color per image, (B,): sqrt of the summed fourth powers of the pairwise differences
    of the channel means (R-G, R-B, B-G) of x (B, 3, H, W). Floored before the root so equal means
    give a zero gradient instead of NaN."""
    r, g, b = x.mean(dim=(2, 3)).unbind(1)
    return ((r - g) ** 4 + (r - b) ** 4 + (b - g) ** 4).clamp_min(1e-24).sqrt()


@register("gdp")
class GDP(Sampler):
    """GDP-x0 / GDP-xt mean guidance with optional blind parameter updates.

    scale: the code's --img_guidance_scale (x0: SR 2000, deblur 6000, inpainting 4000, colorization
    6000, low-light/HDR 80000; see configs/gdp for how the code's repeated calls enter it);
    guidance: "x0" (default, the paper's GDP-x0) or "xt"; blind: update the operator's parameters;
    param_lr: their step size; color_weight: weight of L_color (colorization 500). `sigma` given to
    `sample` is not used (GDP's code has no noise model; its measurements are noiseless uint8).
    Any size: with `patch_size` (or a `PatchedModel`) the loss is normalised per model window (see
    `window_ratio`), which reproduces the code's per-patch averaging.
    """

    param_specs = {"scale": Param(float, low=0.0), "guidance": Param(str, choices=GUIDANCE), "blind": Param(bool),
                   "param_lr": Param(float, low=0.0), "color_weight": Param(float, low=0.0)}

    def __init__(self, scale: float = 2000.0, guidance: str = "x0", blind: bool = True, param_lr: float = 1.0,
                 color_weight: float = 0.0, steps: int = 1000, **kwargs: Any):
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
        self.scale, self.guidance, self.blind = float(scale), guidance, bool(blind)
        self.param_lr, self.color_weight = float(param_lr), float(color_weight)
        super().__init__(steps=steps, **kwargs)

    @staticmethod
    def window_ratio(model: Model, x: torch.Tensor) -> float:
        """H W / (h w): how many model windows (h, w) the image (H, W) holds (1 without patches).

        The code takes the loss mean over each 256 x 256 patch and averages the patches' mean shifts
        and M updates: for a pixelwise operator every pixel then gets the gradient of its own
        squared residual divided by the patch's (not the image's) element count, i.e. the
        whole-image mean times this ratio. The gain f, shared by all patches, gets the average of
        the per-patch steps, which is the whole-image mean's gradient up to the code's weighting of
        pixels by how many patches cover them (1 to 4 at 400 x 600).
        """
        height, width = x.shape[-2:]
        h, w = model_window(model, height, width)
        return height * width / (h * w)

    def guidance_shift(self, op: Any, y: torch.Tensor, v: torch.Tensor, ratio: float) -> torch.Tensor:
        """g = -grad_v (scale * ratio * sum_b L_b(v) + color_weight * sum_b L_color(v_b)), and one
        gradient step on the operator's parameters (when blind). v: (B, C, H, W) in [-1, 1]."""
        params: List[torch.nn.Parameter] = [p for p in op.parameters() if p.requires_grad] if self.blind else []
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            mse = ((op.forward(v) - y) / 2).pow(2).flatten(1).mean(dim=1)          # (B,), [0, 1] scale
            objective = self.scale * ratio * mse.sum()
            if self.color_weight:
                objective = objective + self.color_weight * color_constancy_loss(v).sum()
            (grad,) = torch.autograd.grad(objective, v, retain_graph=bool(params))
            # Parameters step on the batch-mean loss (GDP runs batch 1, where it equals the code's sum).
            param_grads = torch.autograd.grad(mse.mean(), params) if params else ()
        with torch.no_grad():
            for p, g in zip(params, param_grads):
                per_pixel = p.dim() >= 2 and tuple(p.shape[-2:]) == tuple(v.shape[-2:])
                p -= self.param_lr * (ratio if per_pixel else 1.0) * g
        return -grad

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
        v = out["x0_hat"] if self.guidance == "x0" else x_t
        mean = out["mean"] + self.guidance_shift(op, y, v, self.window_ratio(model, x_t))
        return self.diffusion.ddpm_step(mean, out["log_variance"], t, randn_like(x_t, generator)), out["x0_hat"]
