"""Inpainting ``A = diag(m)`` with DPS masks (box, random pixels, extreme) or a user's mask image."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from operators.base import LinearOperator, Rho, numpy_rng, pair, positive_int, rho_view
from operators.svd import SelectionSVD, cached_svd

MASK_TYPES = ("box", "random", "extreme", "file")


def box_mask(size: tuple[int, int], box_size: int, margin: int, rng: np.random.Generator) -> np.ndarray:
    """DPS box: a ``box_size`` square hole, top/left uniform in ``[margin, size - margin - box_size)``
    (``[16, 111]`` for 256 images)."""
    h, w = size
    if min(h, w) - margin - box_size <= margin:
        raise ValueError(f"box_size={box_size} with margin={margin} does not fit an image of size {size}")
    top = rng.integers(margin, h - margin - box_size)
    left = rng.integers(margin, w - margin - box_size)
    mask = np.ones(size)
    mask[top:top + box_size, left:left + box_size] = 0
    return mask


def random_mask(size: tuple[int, int], prob_range: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """DPS random mask: ``p ~ U(lo, hi)`` is the *missing* fraction; ``int(H W p)`` pixels are
    chosen without replacement and zeroed (one mask shared by all channels)."""
    h, w = size
    p = rng.uniform(prob_range[0], prob_range[1])
    mask = np.ones(h * w)
    mask[rng.choice(h * w, int(h * w * p), replace=False)] = 0
    return mask.reshape(h, w)


def read_mask(path: Union[str, Path]) -> np.ndarray:
    """Mask image -> ``(H, W)`` 0/1 array; white (> 127 in grayscale) = observed."""
    with Image.open(path) as image:
        return (np.asarray(image.convert("L")) > 127).astype(np.float64)


class Inpainting(LinearOperator):
    """``y = m * x`` with ``m`` of shape ``(1, 1, H, W)`` (buffer ``mask``, 1 = observed)."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(np.asarray(mask, dtype=np.float64))[None, None])

    def _mask(self, like: Tensor) -> Tensor:
        if tuple(like.shape[-2:]) != tuple(self.mask.shape[-2:]):
            raise ValueError(f"inpainting mask is {tuple(self.mask.shape[-2:])}, image is {tuple(like.shape[-2:])}")
        return self.mask.to(device=like.device, dtype=like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._mask(x) * x

    def transpose(self, y: Tensor) -> Tensor:
        return self._mask(y) * y

    def pinv(self, y: Tensor) -> Tensor:
        """diag(m) is an orthogonal projection, so A^+ = A^T = A."""
        return self._mask(y) * y

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """Elementwise closed form ``(m y + rho z) / (m + rho)``."""
        m, r = self._mask(z), rho_view(rho, z)
        return (m * y + r * z) / (m + r)

    def svd(self, shape: Sequence[int], device: Optional[torch.device] = None,
            dtype: torch.dtype = torch.float32) -> SelectionSVD:
        """SVD form for images of shape ``(..., C, H, W)`` (operators/svd.py; DDRM's ``Inpainting``
        layout: observed entries first, singular values 1)."""
        c, h, w = (int(v) for v in shape[-3:])
        if (h, w) != tuple(self.mask.shape[-2:]):
            raise ValueError(f"inpainting mask is {tuple(self.mask.shape[-2:])}, image is {(h, w)}")
        return cached_svd(self, (c, device, dtype), lambda: SelectionSVD(self.mask[0, 0].to(device, dtype), c))

    def save_mask(self, path: Union[str, Path]) -> None:
        """Write the mask as an 8-bit PNG (white = observed); ``mask_path`` reloads it."""
        Image.fromarray((self.mask[0, 0].cpu().numpy() * 255).astype(np.uint8)).save(path)


def build_inpainting(mask_type: Optional[str] = None, image_size: Union[int, Sequence[int]] = 256,
                     mask_prob_range: Sequence[float] = (0.3, 0.7), box_size: int = 128, margin: int = 16,
                     mask_path: Optional[str] = None, seed: int = 0,
                     generator: Optional[np.random.Generator] = None) -> Inpainting:
    """``inpainting``. ``mask_type``: box | random | extreme (= 1 - box) | file (``mask_path``);
    default "file" when ``mask_path`` is given, else "random". Random masks come from
    ``generator`` if given, else from ``seed``. DPS defaults: prob range (0.3, 0.7), box 128, margin 16."""
    mask_type = mask_type if mask_type is not None else ("file" if mask_path is not None else "random")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    if (mask_type == "file") != (mask_path is not None):
        raise ValueError("mask_path is required by, and only used with, mask_type 'file'")
    if mask_type == "file":
        return Inpainting(read_mask(mask_path))
    size = pair(image_size, "image_size")
    rng = numpy_rng(seed, generator)
    if mask_type == "random":
        lo_hi = list(mask_prob_range) if isinstance(mask_prob_range, (list, tuple)) else []
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 1:
            raise ValueError(f"mask_prob_range must be [lo, hi] with 0 <= lo <= hi <= 1, got {mask_prob_range!r}")
        return Inpainting(random_mask(size, lo_hi, rng))
    positive_int(box_size, "box_size")
    if not isinstance(margin, int) or margin < 0:
        raise ValueError(f"margin must be a non-negative integer, got {margin!r}")
    box = box_mask(size, box_size, margin, rng)
    return Inpainting(box if mask_type == "box" else 1 - box)
