"""Image files at the boundary: [-1, 1] tensors to PNG and back, written atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .files import atomic_write

PathLike = Union[str, os.PathLike]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8 as round(255 * clamp((x + 1) / 2)); never min-max stretched."""
    x01 = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return (x01 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Largest image (width x height) decoded by default: 64 megapixels covers cameras up to 61 MP and
# is 0.77 GB as float32 RGB; a small PNG of one colour can declare 10000 x 10000 (1.2 GB as floats).
MAX_PIXELS = 64_000_000
RESIZE_POLICIES = ("center_crop", "resize", "error", "keep")


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


def images_by_stem(source: PathLike) -> Dict[str, Path]:
    """`list_images(source)` keyed by file stem, in sorted order. Outputs are named by stem, so two
    files with one stem (in different subfolders, or a.png beside a.jpg) are refused (ValueError)."""
    found: Dict[str, Path] = {}
    for f in list_images(source):
        if f.stem in found:
            raise ValueError(f"two images share the stem {f.stem!r}: {found[f.stem]} and {f}")
        found[f.stem] = f
    return found


def _rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255] from any PIL mode.

    16- and 32-bit grayscale (modes I;16*, I, F) are scaled by their type's full range to keep
    their precision instead of being clipped to 8 bits; palette and grayscale images are expanded
    to RGB; an alpha channel is dropped (colours are taken as stored, not composited).
    """
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        full = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            full = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        gray = (np.clip(arr / full, 0, 1) * 255).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def load_image(path: PathLike, size: Union[int, None] = None, policy: str = "center_crop",
               max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read an image as a (3, H, W) float32 tensor in [-1, 1].

    EXIF orientation is applied; grayscale, palette, RGBA and 16-bit files become RGB (see
    `_rgb_array`). With `size`, an image that is not size x size is brought to it by `policy`:
    "center_crop" scales the shorter side to `size` (bicubic, antialiased) and crops the centre;
    "resize" scales both sides to `size` (aspect ratio not kept); "error" refuses it; "keep" leaves
    every image at its own size (for samplers run on patches of the model's size).
    Unreadable files raise OSError, and so do images of more than `max_pixels` pixels (width x
    height from the file's header, refused before decoding; config key `data.max_pixels`) and
    images above twice PIL's decompression-bomb limit (179 megapixels) whatever `max_pixels` says.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise OSError(f"{path}: {img.width}x{img.height} is {img.width * img.height:,} pixels, above the "
                              f"limit of {max_pixels:,} (data.max_pixels); not decoded")
            img = ImageOps.exif_transpose(img)
            arr = _rgb_array(img)
    except Image.DecompressionBombError as err:  # not an OSError: make it one like other unreadable files
        raise OSError(f"{path}: refused as too large ({err})") from None
    if size is not None and policy != "keep" and arr.shape[:2] != (size, size):
        h, w = arr.shape[:2]
        if policy == "error":
            raise ValueError(f"{path} is {w}x{h}, the model needs {size}x{size} "
                             f"(set data.resize to center_crop or resize, or to keep with sampler.patch_size "
                             f"to restore it at its own size)")
        if policy == "resize":
            arr = _resize(arr, size, size)
        else:
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            arr = _resize(arr, nw, nh)
            left, top = (nw - size) // 2, (nh - size) // 2
            arr = arr[top:top + size, left:left + size]
    # Contiguous (C, H, W): a permuted view would give FFT-based operators another rounding than
    # the same image stacked into a batch, and a baseline another y than the sampler saw.
    return (torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1) / 127.5 - 1).contiguous()


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of an (H, W, 3) float array per channel (PIL antialiases when shrinking)."""
    channels = [np.asarray(Image.fromarray(arr[..., c], mode="F").resize((width, height), Image.BICUBIC))
                for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 255)


def save_image(x: torch.Tensor, path: PathLike) -> None:
    """Write one (C, H, W) image in [-1, 1] (C = 1 or 3) as PNG, atomically (`files.atomic_write`),
    so a killed run never leaves a half-written image under the final name."""
    arr = to_uint8(x)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    atomic_write(path, lambda f: img.save(f, format="PNG"))


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
