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

import inspect
from typing import Any, List, Optional, Tuple

import torch

from guided_diffusion.diffusion import Generators, Model, randn_like

from .base import Sampler, register
from .params import Param
from .patches import PatchedModel, model_window

GUIDANCE = ("x0", "xt")
PATCH_RULES = ("official", "merged")


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
    Any size (`patch_size`, or a `PatchedModel`): patch_rule "official" (default) is the code's
    per-patch rule (`patchwise_step`): the model, the clamp of x0_hat, the guidance and the
    parameter steps run per patch and are averaged over the overlaps; it needs an operator that
    can be applied to a window (`forward(x, offset=(top, left))`: low_light, hdr). patch_rule
    "merged" treats the patched model as one size-free model (merged output, one clamp) and guides
    with the global operator, the loss normalised per model window (`window_ratio`): it works with
    any operator (SR, blur at any size) and equals the official rule for the mean shift and M
    when no patch clamps differently, but f's step weights pixels by coverage differently.
    """

    param_specs = {"scale": Param(float, low=0.0), "guidance": Param(str, choices=GUIDANCE), "blind": Param(bool),
                   "param_lr": Param(float, low=0.0), "color_weight": Param(float, low=0.0),
                   "patch_rule": Param(str, choices=PATCH_RULES)}

    def __init__(self, scale: float = 2000.0, guidance: str = "x0", blind: bool = True, param_lr: float = 1.0,
                 color_weight: float = 0.0, patch_rule: str = "official", steps: int = 1000, **kwargs: Any):
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
        if patch_rule not in PATCH_RULES:
            raise ValueError(f"patch_rule must be one of {PATCH_RULES}, got {patch_rule!r}")
        self.scale, self.guidance, self.blind, self.patch_rule = float(scale), guidance, bool(blind), patch_rule
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

    def _blind_params(self, op: Any) -> List[torch.nn.Parameter]:
        """The operator's trainable parameters when blind; an operator without `parameters()` (any
        object with the protocol's five members is an operator) has none to update."""
        if not self.blind or not callable(getattr(op, "parameters", None)):
            return []
        return [p for p in op.parameters() if p.requires_grad]

    def guidance_terms(self, op: Any, y: torch.Tensor, v: torch.Tensor, ratio: float = 1.0,
                 offset: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """(g, parameter gradients) at v (B, C, h, w) in [-1, 1], nothing updated:
        g = -grad_v (scale * ratio * sum_b L_b(v) + color_weight * sum_b L_color(v_b)), and the
        gradients of the batch-mean L w.r.t. the operator's trainable parameters (when blind).
        offset: v is the window of the image at (top, left) and y that window of the measurement
        (the operator's `forward(v, offset=...)`)."""
        params = self._blind_params(op)
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            a_v = op.forward(v) if offset is None else op.forward(v, offset=offset)
            mse = ((a_v - y) / 2).pow(2).flatten(1).mean(dim=1)                   # (B,), [0, 1] scale
            objective = self.scale * ratio * mse.sum()
            if self.color_weight:
                objective = objective + self.color_weight * color_constancy_loss(v).sum()
            (grad,) = torch.autograd.grad(objective, v, retain_graph=bool(params))
            # Parameters step on the batch-mean loss (GDP runs batch 1, where it equals the code's sum).
            param_grads = torch.autograd.grad(mse.mean(), params) if params else ()
        return -grad, param_grads

    def guidance_shift(self, op: Any, y: torch.Tensor, v: torch.Tensor, ratio: float) -> torch.Tensor:
        """g of `guidance_terms` on the whole image, and one gradient step of size param_lr on the
        operator's parameters (per-pixel ones scaled by `ratio`, see `window_ratio`)."""
        shift, param_grads = self.guidance_terms(op, y, v, ratio)
        with torch.no_grad():
            for p, g in zip(self._blind_params(op), param_grads):
                p -= self.param_lr * (ratio if _per_pixel(p, v) else 1.0) * g
        return shift

    def check_task(self, op: Any) -> None:
        if self.patch_size is not None and self.patch_rule == "official" and op is not None and not _takes_offset(op):
            raise ValueError(f"patch_rule 'official' guides each patch with the operator applied to that window, "
                             f"and {type(op).__name__} cannot be (set sampler.patch_rule: merged)")

    def patchwise_step(self, model: PatchedModel, x_t: torch.Tensor, t: torch.Tensor, op: Any,
                       y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The code's patch rule (gaussian_diffusion_x0_enhancement_direct.py, p_sample): per patch,
        mean, log-variance and clamped x0_hat of the model on the crop, the guidance of the patch's
        own loss (a mean over the patch) added to its mean, and the parameter gradients at the
        pre-step values; then mean, log-variance and x0_hat are averaged over the patches covering
        each pixel, and each parameter takes the average of the per-patch steps (per-pixel maps over
        the covering patches, scalars such as the gain f over all patches).
        Returns (mean, log_variance, x0_hat), each (B, C, H, W); updates the parameters.
        """
        if not _takes_offset(op):
            raise ValueError(f"patch_rule 'official' guides each patch with the operator applied to that window; "
                             f"{type(op).__name__}.forward takes no offset (use patch_rule: merged)")
        height, width = x_t.shape[-2:]
        count = model.coverage(height, width, x_t)
        params = self._blind_params(op)
        param_steps = [torch.zeros_like(p) for p in params]
        sums: Optional[List[torch.Tensor]] = None
        windows = model.windows(height, width)
        for (top, left), win in windows:
            with torch.no_grad():
                out = self.diffusion.p_mean_variance(model.model, x_t[win], t, self.clip_denoised, self.var_type)
            v = out["x0_hat"] if self.guidance == "x0" else x_t[win]
            shift, param_grads = self.guidance_terms(op, y[win], v, offset=(top, left))
            parts = (out["mean"] + shift, out["log_variance"], out["x0_hat"])
            if sums is None:
                sums = [x_t.new_zeros(x_t.shape) for _ in parts]
            for total, part in zip(sums, parts):
                total[win] += part
            for acc, g in zip(param_steps, param_grads):
                acc += g
        with torch.no_grad():
            for p, acc in zip(params, param_steps):
                p -= self.param_lr * (acc / count.to(acc) if _per_pixel(p, x_t) else acc / len(windows))
        mean, log_variance, x0_hat = (total / count for total in sums)
        return mean, log_variance, x0_hat

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(model, PatchedModel) and self.patch_rule == "official":
            mean, log_variance, x0_hat = self.patchwise_step(model, x_t, t, op, y)
        else:
            with torch.no_grad():
                out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
            v = out["x0_hat"] if self.guidance == "x0" else x_t
            mean = out["mean"] + self.guidance_shift(op, y, v, self.window_ratio(model, x_t))
            log_variance, x0_hat = out["log_variance"], out["x0_hat"]
        return self.diffusion.ddpm_step(mean, log_variance, t, randn_like(x_t, generator)), x0_hat


def _per_pixel(p: torch.Tensor, like: torch.Tensor) -> bool:
    """A parameter that is a map over the image's pixels (GDP's M), as opposed to a scalar (f)."""
    return p.dim() >= 2 and tuple(p.shape[-2:]) == tuple(like.shape[-2:])


def _takes_offset(op: Any) -> bool:
    """Whether op.forward can apply the operator to a window: forward(x, offset=(top, left))."""
    return "offset" in inspect.signature(op.forward).parameters
