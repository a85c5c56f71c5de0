"""Image files at the boundary: [-1, 1] tensors to PNG and back, written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Union

import numpy as np
import torch
from PIL import Image

PathLike = Union[str, os.PathLike]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8 as round(255 * clamp((x + 1) / 2)); never min-max stretched."""
    x01 = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return (x01 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RESIZE_POLICIES = ("center_crop", "resize", "error")


def list_images(source: PathLike) -> List[Path]:
    """One image file, or the image files of a folder (recursively), sorted by path."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"input {source.resolve()} does not exist")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"input folder {source.resolve()} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image(path: PathLike, size: Union[int, None] = None, policy: str = "center_crop") -> torch.Tensor:
    """Read an image as a (3, H, W) float32 tensor in [-1, 1]; grayscale and RGBA become RGB.

    With `size`, an image that is not size x size is brought to it by `policy`:
    "center_crop" scales the shorter side to `size` (bicubic, antialiased) and crops the centre;
    "resize" scales both sides to `size` (aspect ratio not kept); "error" refuses it.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            if policy == "error":
                raise ValueError(f"{path} is {img.size[0]}x{img.size[1]}, the model needs {size}x{size} "
                                 f"(set data.resize to center_crop or resize)")
            if policy == "resize":
                img = img.resize((size, size), Image.BICUBIC)
            else:
                w, h = img.size
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                img = img.resize((nw, nh), Image.BICUBIC)
                left, top = (nw - size) // 2, (nh - size) // 2
                img = img.crop((left, top, left + size, top + size))
        arr = np.array(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def save_image(x: torch.Tensor, path: PathLike) -> None:
    """Write one (C, H, W) image in [-1, 1] (C = 1 or 3) as PNG via a temporary file and an atomic rename,
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
