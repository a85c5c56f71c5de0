"""Colorization (DDRM/GDP): ``y = h_R R + h_G G + h_B B``, one output channel; default
``h = (0.3333, 0.3334, 0.3333)`` (DDRM's ``Colorization``), DDNM's simplified path uses ``(1/3, 1/3, 1/3)``."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from operators.base import LinearOperator, Rho, rho_view
from operators.svd import ChannelMixSVD, axis_svd, cached_svd, cast

WEIGHTS = (0.3333, 0.3334, 0.3333)  # DDRM's Colorization weights h


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """Three finite numbers, not all zero, as a tuple of floats; ValueError otherwise."""
    items = list(weights) if isinstance(weights, (list, tuple)) else []
    ok = len(items) == 3 and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                                 for w in items)
    if not ok or not any(items):
        raise ValueError(f"weights must be three finite numbers, not all zero, got {weights!r}")
    return tuple(float(w) for w in items)  # type: ignore[return-value]


class Colorization(LinearOperator):
    """``(B, 3, H, W) -> (B, 1, H, W)``; every map below acts per pixel on the 3-vector x."""

    def __init__(self, weights: Sequence[float] = WEIGHTS) -> None:
        super().__init__()
        self.weights = check_weights(weights)

    def _h(self, like: Tensor) -> Tensor:
        return torch.tensor(self.weights, device=like.device, dtype=like.dtype).reshape(1, 3, 1, 1)

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

    def svd(self, shape: Sequence[int], device: Optional[torch.device] = None,
            dtype: torch.dtype = torch.float32) -> ChannelMixSVD:
        """SVD form for images of shape ``(..., 3, H, W)`` (operators/svd.py): DDRM's ``Colorization``,
        ``torch.svd`` of the float32 row ``h`` and component-major V-space."""
        c, h, w = (int(v) for v in shape[-3:])
        if c != 3:
            raise ValueError(f"colorization expects 3 input channels, got {c}")

        def build() -> ChannelMixSVD:
            factors = cast(axis_svd(torch.tensor([self.weights], dtype=torch.float32)), device, dtype)
            return ChannelMixSVD(*factors, (h, w))
        return cached_svd(self, (h, w, device, dtype), build)
