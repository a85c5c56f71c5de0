"""Colorization (DDRM/GDP): ``y = 0.3333 R + 0.3334 G + 0.3333 B``, one output channel."""

from __future__ import annotations

import torch
from torch import Tensor

from operators.base import LinearOperator, Rho, rho_view

WEIGHTS = (0.3333, 0.3334, 0.3333)  # DDRM's Colorization weights h


class Colorization(LinearOperator):
    """``(B, 3, H, W) -> (B, 1, H, W)``; every map below acts per pixel on the 3-vector x."""

    def _h(self, like: Tensor) -> Tensor:
        return torch.tensor(WEIGHTS, device=like.device, dtype=like.dtype).reshape(1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"colorization expects 3 input channels, got {x.shape[1]}")
        return (self._h(x) * x).sum(dim=1, keepdim=True)

    def transpose(self, y: Tensor) -> Tensor:
        return self._h(y) * y

    def pinv(self, y: Tensor) -> Tensor:
        """``h y / ||h||^2`` (close to the gray value replicated to 3 channels)."""
        h = self._h(y)
        return h * y / (h * h).sum()

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """Sherman-Morrison per pixel: ``x = z + h (y - h.z) / (||h||^2 + rho)``."""
        h, r = self._h(z), rho_view(rho, z)
        return z + h * (y - (h * z).sum(dim=1, keepdim=True)) / ((h * h).sum() + r)
