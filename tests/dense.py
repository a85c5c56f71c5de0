"""Dense measurement matrices for exact tests on small images (wrap them in operators.MatrixOperator)."""
from __future__ import annotations

from typing import Sequence

import torch


def inpainting_matrix(d: int, keep: torch.Tensor) -> torch.Tensor:
    """Rows of the identity for the kept coordinates."""
    return torch.eye(d, dtype=torch.float64)[keep]


def downsampling_matrix(shape: Sequence[int], factor: int = 2) -> torch.Tensor:
    """Average pooling by `factor` per channel, as a dense (d / factor^2, d) matrix."""
    c, h, w = shape
    eye = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    pooled = torch.nn.functional.avg_pool2d(eye, factor)
    return pooled.reshape(c * h * w, -1).T.contiguous()
