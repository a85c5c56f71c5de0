"""Image files at the boundary: [-1, 1] tensors to PNG and back, written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

PathLike = Union[str, os.PathLike]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8 as round(255 * clamp((x + 1) / 2)); never min-max stretched."""
    x01 = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return (x01 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def load_image(path: PathLike) -> torch.Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [-1, 1] (grayscale and RGBA become RGB)."""
    with Image.open(path) as img:
        arr = np.array(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def save_image(x: torch.Tensor, path: PathLike) -> None:
    """Write one (C, H, W) image in [-1, 1] as PNG via a temporary file and an atomic rename,
    so a killed run never leaves a half-written image under the final name."""
    arr = to_uint8(x)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_grid(images: torch.Tensor, ncol: int = 8, pad: int = 2) -> torch.Tensor:
    """Tile (N, C, H, W) images into one (C, H', W') image on a white ([-1, 1] scale: 1) background."""
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    grid = images.new_ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for k in range(n):
        r, q = divmod(k, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = images[k]
    return grid
