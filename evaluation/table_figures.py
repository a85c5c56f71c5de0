"""The comparison figure of a table: one grid row per method, one column per task, a block per image.

For each of the first images (by stem) restored by every run, a block of rows: the measurement,
each sampler row's restoration, the classical baselines (rows of kind `baseline`, one shared row),
and the ground truth. Each tile of the image's size carries its PSNR against the truth (on the
8-bit PNGs, as `scripts/evaluate.py` scores them); a measurement of another size (SR) is shown
nearest-resized without a PSNR. Runs are read from the folders `scripts/reproduce.py` writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from configs import load_config, resolve_path
from guided_diffusion.image_io import list_images, load_image, make_grid, to_uint8

from .errors import EvaluationError
from .figures import PAD, caption, compose
from .metrics import psnr
from .tables import Table, run_folder

CLASSICAL = "classical"  # the shared row of the baseline rows


def task_runs(table: Table, limit: Optional[int], results: Optional[Path]) -> Dict[str, Dict[str, Path]]:
    """task -> figure row (a sampler row's label, or CLASSICAL for baselines) -> run folder, for the
    rows whose run has restorations."""
    runs: Dict[str, Dict[str, Path]] = {}
    for row in table.rows:
        if not row.config:
            continue
        folder = run_folder(load_config(str(resolve_path(row.config)))["output"], limit, results)
        if (folder / "recon").is_dir():
            runs.setdefault(row.task, {})[CLASSICAL if row.kind == "baseline" else row.label] = folder
    if not runs:
        raise EvaluationError(f"no run of table {table.name!r} has a recon/ folder yet; run scripts/reproduce.py first")
    return runs


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(to_uint8(x)).permute(2, 0, 1)[None]


def tile(path: Path, truth: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: the image at `path` captioned with its PSNR against `truth`, or
    nearest-resized to the truth's size (no PSNR) when it has another size."""
    img = load_image(path)
    if img.shape[-2:] != truth.shape[-2:]:
        return F.interpolate(img[None], size=tuple(truth.shape[-2:]), mode="nearest")[0]
    return caption(img, f"{float(psnr(_as_uint8(img), _as_uint8(truth))[0]):.2f} dB")


def grid_rows(runs: Dict[str, Dict[str, Path]], methods: List[str], n_images: int) -> Tuple[torch.Tensor, List[str]]:
    """(rows * tasks, 3, H, W) tiles in [-1, 1], row-major, and one label per grid row. Rows per
    image: measured, each of `methods`, truth; a method without a run for a task gets a white tile."""
    tasks = list(runs)
    stems = sorted(set.intersection(*({p.stem for p in list_images(f / "recon")}
                                      for by_method in runs.values() for f in by_method.values())))[:n_images]
    if not stems:
        raise EvaluationError("the runs share no restored image")
    tiles: List[List[torch.Tensor]] = []
    labels: List[str] = []
    for stem in stems:
        truths = {t: load_image(next(iter(runs[t].values())) / "label" / f"{stem}.png") for t in tasks}
        tiles.append([tile(next(iter(runs[t].values())) / "input" / f"{stem}.png", truths[t]) for t in tasks])
        labels.append(f"measured\n{stem}")
        for m in methods:
            tiles.append([tile(runs[t][m] / "recon" / f"{stem}.png", truths[t]) if m in runs[t]
                          else torch.ones_like(truths[t]) for t in tasks])
            labels.append(m)
        tiles.append([truths[t] for t in tasks])
        labels.append("truth")
    return torch.stack([t for row in tiles for t in row]), labels


def table_figure(table: Table, limit: Optional[int], results: Optional[Path], n_images: int) -> Tuple[torch.Tensor, int, int]:
    """The figure as (3, H, W) in [-1, 1], and its number of grid rows and columns."""
    runs = task_runs(table, limit, results)
    methods = list(dict.fromkeys(m for by_method in runs.values() for m in by_method if m != CLASSICAL))
    if any(CLASSICAL in by_method for by_method in runs.values()):
        methods.append(CLASSICAL)
    tiles, labels = grid_rows(runs, methods, max(1, n_images))
    classical = list(dict.fromkeys(r.method for r in table.rows if r.kind == "baseline"))
    labels = [f"{CLASSICAL}:\n" + " /\n".join(classical) if label == CLASSICAL else label for label in labels]
    grid = make_grid(tiles, ncol=len(runs), pad=PAD)
    return compose(grid, list(runs), labels, tiles.shape[-1]), len(labels), len(runs)
