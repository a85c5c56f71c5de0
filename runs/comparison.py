"""comparison.png of a restoration run: measured | classical baseline | restored | truth.

A nearest-upsampled measurement beside a restoration flatters any method, so the figure puts the
classical restoration of the same measurement (`evaluation.baselines`: bicubic, harmonic, ...; the
run writes it to `baseline/`) beside the diffusion result, and prints each tile's PSNR against the
truth (on the 8-bit PNGs, as `scripts/evaluate.py` scores them). A measurement of another size than
the image (SR) is shown nearest-resized and without a PSNR.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F

from evaluation.figures import PAD, caption, compose
from evaluation.metrics import psnr
from guided_diffusion.image_io import load_image, make_grid, save_image, to_uint8

from .folder import RunFolder

COMPARISON_IMAGES = 16  # rows of comparison.png: a picture to look at, not a record of the run


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(to_uint8(x)).permute(2, 0, 1)[None]


def _tile(path: Path, truth: torch.Tensor) -> torch.Tensor:
    img = load_image(path)
    if img.shape[-2:] != truth.shape[-2:]:
        return F.interpolate(img[None], size=truth.shape[-2:], mode="nearest")[0]
    return caption(img, f"{float(psnr(_as_uint8(img), _as_uint8(truth))[0]):.2f} dB")


def write_comparison(run: RunFolder) -> Optional[Path]:
    """Write <run>/comparison.png from input/, baseline/ (if any), recon/ and label/ for the first
    COMPARISON_IMAGES restored images; returns its path (None while recon/ is empty)."""
    stems = sorted(p.stem for p in (run.root / "recon").glob("*.png"))[:COMPARISON_IMAGES]
    if not stems:
        return None
    with_baseline = all((run.root / "baseline" / f"{s}.png").is_file() for s in stems)
    columns = ["measured", *(["classical"] if with_baseline else []), "restored", "truth"]
    tiles: List[torch.Tensor] = []
    for stem in stems:
        truth = load_image(run.root / "label" / f"{stem}.png")
        tiles.append(_tile(run.root / "input" / f"{stem}.png", truth))
        if with_baseline:
            tiles.append(_tile(run.root / "baseline" / f"{stem}.png", truth))
        tiles.append(_tile(run.root / "recon" / f"{stem}.png", truth))
        tiles.append(truth)
    height, width = max(t.shape[-2] for t in tiles), max(t.shape[-1] for t in tiles)
    # Images of several sizes (data.resize keep) sit top-left in cells of the largest size, on white.
    cells = torch.ones(len(tiles), 3, height, width)
    for cell, t in zip(cells, tiles):
        cell[:, :t.shape[-2], :t.shape[-1]] = t
    grid = make_grid(cells, ncol=len(columns), pad=PAD)
    path = run.path("comparison.png")
    save_image(compose(grid, columns, stems, width), path)
    return path
