"""The measurement gradient DPS-style samplers share: grad_{x_t} of ||y - A(x0_hat(x_t))||."""
from __future__ import annotations

from typing import Any, Tuple

import torch


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
