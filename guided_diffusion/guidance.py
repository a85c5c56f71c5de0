"""The measurement gradient DPS-style samplers share: grad_{x_t} of ||y - A(x0_hat(x_t))||."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from .diffusion import GaussianDiffusion, Generators, Model, randn_like


def residual_norm_gradient(op: Any, y: torch.Tensor, x_t: torch.Tensor, x0_hat: torch.Tensor,
                           noise_model: str = "gaussian") -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the un-squared residual norm w.r.t. x_t, as the DPS code steps on it.

    x0_hat must have been computed from x_t with autograd on (through the network and the clamp).
    Returns (grad shaped like x_t, per-image norms ||y_i - A(x0_hat_i)|| of shape (B,)).
    The loss is the *sum of per-image norms*: the DPS code takes one norm over the whole batch
    tensor, which couples the images (grad_i scales with 1 / ||r_total||); the sum gives each image
    exactly the gradient it gets in a batch of one.
    noise_model "poisson": DPS's Poisson weighting, loss_i = mean_j ||r_i|| / |y_ij|.
    """
    residual = y - op.forward(x0_hat)
    norms = residual.flatten(1).norm(dim=1)
    if noise_model == "gaussian":
        loss = norms
    elif noise_model == "poisson":
        # Literal DPS weighting; |y| is floored so a zero measurement cannot give an infinite step.
        loss = (norms[:, None] / y.flatten(1).abs().clamp_min(1e-6)).mean(dim=1)
    else:
        raise ValueError(f"unknown noise model {noise_model!r}; known: gaussian, poisson")
    (grad,) = torch.autograd.grad(loss.sum(), x_t)
    return grad, norms.detach()


def ancestral_step_and_gradient(diffusion: GaussianDiffusion, model: Model, x_t: torch.Tensor, t: torch.Tensor,
                                op: Any, y: torch.Tensor, generator: Generators, clip_denoised: bool = True,
                                var_type: Optional[str] = None, noise_model: str = "gaussian"
                                ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """One model call with autograd on: the ancestral step x'_{t-1} = mean + sigma_t z (one draw z)
    and the residual-norm gradient through the network (DPS eq. 16-17, MCG's first two steps).

    Returns (x'_{t-1} detached, grad_{x_t} ||y - A(x0_hat)||, the p_mean_variance dict detached).
    """
    with torch.enable_grad():
        x_t = x_t.detach().requires_grad_(True)
        out = diffusion.p_mean_variance(model, x_t, t, clip_denoised, var_type)
        x_prev = diffusion.ddpm_step(out["mean"], out["log_variance"], t, randn_like(x_t, generator))
        grad, _ = residual_norm_gradient(op, y, x_t, out["x0_hat"], noise_model)
    return x_prev.detach(), grad, {k: v.detach() for k, v in out.items()}
