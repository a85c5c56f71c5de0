"""A dense matrix wrapped in the operator protocol (forward, transpose, pinv, prox, is_linear),
for exact tests on small images: samplers see nothing but these methods."""
from __future__ import annotations

from typing import Sequence

import torch


class MatrixOperator:
    """y = A vec(x) for x (B, *shape); y is returned as (B, m)."""

    is_linear = True

    def __init__(self, A: torch.Tensor, shape: Sequence[int]):
        self.A = A.to(torch.float64)
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.A.T.to(x.dtype)

    __call__ = forward

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.A.to(y.dtype)).reshape(len(y), *self.shape)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ torch.linalg.pinv(self.A).T.to(y.dtype)).reshape(len(y), *self.shape)

    def prox(self, z: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
        d = self.A.shape[1]
        lhs = self.A.T @ self.A + rho * torch.eye(d, dtype=torch.float64)
        rhs = y.to(torch.float64) @ self.A + rho * z.flatten(1).to(torch.float64)
        return torch.linalg.solve(lhs, rhs.T).T.reshape(len(z), *self.shape).to(z.dtype)


def inpainting_matrix(d: int, keep: torch.Tensor) -> torch.Tensor:
    """Rows of the identity for the kept coordinates."""
    return torch.eye(d, dtype=torch.float64)[keep]


def downsampling_matrix(shape: Sequence[int], factor: int = 2) -> torch.Tensor:
    """Average pooling by `factor` per channel, as a dense (d / factor^2, d) matrix."""
    c, h, w = shape
    eye = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    pooled = torch.nn.functional.avg_pool2d(eye, factor)
    return pooled.reshape(c * h * w, -1).T.contiguous()
