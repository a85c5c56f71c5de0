"""The one iterative solver of the package: batched conjugate gradient."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-image inner product of ``(B, ...)`` tensors, shaped ``(B, 1, ..., 1)`` for broadcasting."""
    dims = tuple(range(1, a.ndim))
    return (a * b).sum(dim=dims, keepdim=True)


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor,
                       tol: float = 1e-10, max_iter: int = 500) -> Tensor:
    """Solve ``M x = b`` for a symmetric positive (semi-)definite ``M`` given as ``apply``.

    Each image of the batch has its own step sizes (per-image ``rho`` gives per-image systems);
    iteration stops when every image's residual is below ``tol * ||b||``. Consistent singular
    systems started in range(M) stay there, which makes CG usable for the pseudo-inverse.
    """
    x = x0.clone()
    r = b - apply(x)
    p = r.clone()
    rr = batch_dot(r, r)
    stop = (tol * batch_dot(b, b).sqrt()).clamp_min(torch.finfo(b.dtype).tiny) ** 2
    for _ in range(max_iter):
        if bool((rr <= stop).all()):
            break
        mp = apply(p)
        pmp = batch_dot(p, mp)
        active = rr > stop
        # Converged images (or a zero direction) take no step, so they cannot divide by zero.
        alpha = torch.where(active & (pmp > 0), rr / torch.where(pmp > 0, pmp, torch.ones_like(pmp)),
                            torch.zeros_like(pmp))
        x = x + alpha * p
        r = r - alpha * mp
        rr_new = batch_dot(r, r)
        beta = torch.where(active, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return x
