"""A dense matrix as an operator: exact answers on small images (the analytic GMM tests use it)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from operators.base import LinearOperator, Rho, pinv_cutoff, rho_view
from operators.svd import DenseSVD, cached_svd


class MatrixOperator(LinearOperator):
    """y = A vec(x) for x of shape (B, *shape); y is (B, m). A: (m, d), d = prod(shape).

    Every method is exact (dense solves in float64), so this is for small d only.
    """

    def __init__(self, A: Tensor, shape: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=torch.float64))
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.A.T.to(x.dtype)

    def transpose(self, y: Tensor) -> Tensor:
        return (y @ self.A.to(y.dtype)).reshape(len(y), *self.shape)

    def pinv(self, y: Tensor) -> Tensor:
        return (y @ torch.linalg.pinv(self.A).T.to(y.dtype)).reshape(len(y), *self.shape)

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """Solves (A^T A + rho I) x = A^T y + rho z per image."""
        r = rho_view(rho, z).reshape(-1, 1).to(torch.float64)         # (B or 1, 1)
        gram = self.A.T @ self.A
        eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
        lhs = gram + r.reshape(-1, 1, 1) * eye                          # (B or 1, d, d)
        rhs = y.to(torch.float64) @ self.A + r * z.flatten(1).to(torch.float64)
        x = torch.linalg.solve(lhs, rhs[..., None])[..., 0]
        return x.reshape(len(z), *self.shape).to(z.dtype)

    def svd(self, shape: Sequence[int], device: Any = None, dtype: torch.dtype = torch.float64) -> DenseSVD:
        """SVD form (operators/svd.py), factored in float64; singular values below ``pinv_cutoff``
        (float64) times the largest are dropped."""
        if tuple(shape[-len(self.shape):]) != self.shape:
            raise ValueError(f"the matrix acts on images of shape {self.shape}, got {tuple(shape)}")
        return cached_svd(self, (device, dtype), lambda: DenseSVD(self.A, self.shape, pinv_cutoff(torch.float64),
                                                                  device, dtype))


def selection_matrix(d: int, keep: Tensor) -> Tensor:
    """(len(keep), d) rows of the identity: observe the coordinates `keep` (pixel inpainting)."""
    return torch.eye(d, dtype=torch.float64)[keep]


def avgpool_matrix_2d(shape: Sequence[int], factor: int = 2) -> Tensor:
    """(d / factor^2, d) dense matrix of per-channel `factor` x `factor` average pooling, shape (C, H, W)."""
    c, h, w = shape
    eye = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    return torch.nn.functional.avg_pool2d(eye, factor).reshape(c * h * w, -1).T.contiguous()
