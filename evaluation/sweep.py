"""Grid sweeps of a run config's settings on validation images, scored like the tables (PSNR / SSIM).

Each grid point is the config with `key=value` overrides (dotted keys, as `--set`), run into its
own folder `<results>/<task folder>/<config stem>/<key=value,...>` by `runs.restore.run` (which
resumes finished images, so an interrupted sweep continues), then scored.
`classical_sweep` does the same for the keywords of the config's classical baseline
(`evaluation.baselines.classical_restore`) in memory, on the measurements the runs would make.
The sweeps never touch the config's test images: `data.input` is replaced by the validation folder.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml

from configs import ConfigError, load_config, resolve_path
from guided_diffusion import load_model
from guided_diffusion.image_io import images_by_stem, load_image, to_uint8
from runs.restore import run as restore
from runs.task import NOISE_STREAM, build_task, generators, measure

from .baselines import classical_restore
from .evaluator import Networks, evaluate
from .metrics import psnr, ssim
from .pairs import pair_images


@dataclass(frozen=True)
class Point:
    """One grid point: its overrides, mean PSNR / SSIM over the images and the wall time of its run
    (None when this call sampled nothing: the point was resumed complete). A point with images
    that failed (a sampler that diverged at this setting) has `failed` > 0 and NaN scores."""

    overrides: Dict[str, Any]
    psnr: float
    ssim: float
    seconds: Optional[float]
    failed: int = 0

    @property
    def name(self) -> str:
        return point_name(self.overrides)


def point_name(overrides: Dict[str, Any]) -> str:
    """{'sampler.scale': 0.3, 'sampler.zeta': 1.0} -> 'scale=0.3,zeta=1.0' (a point's folder name)."""
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items())


def parse_grid(items: Sequence[str]) -> Dict[str, List[Any]]:
    """['sampler.scale=0.3,1,3'] -> {'sampler.scale': [0.3, 1, 3]} (values parsed as YAML)."""
    grid: Dict[str, List[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(f"--grid {item!r}: expected key=value1,value2,...")
        grid[key.strip()] = values
    return grid


def grid_points(grid: Dict[str, List[Any]]) -> List[Dict[str, Any]]:
    """The Cartesian product of the grid, in the order the values were given (last key fastest)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def sweep(config: str, grid: Dict[str, List[Any]], data: str, results: Path,
          overrides: Sequence[str] = ()) -> List[Point]:
    """Run and score every grid point of `config` on the images of `data`; points in grid order.

    All configs are built (and validated) before the first run. The wall time of a point counts
    only the images sampled in this call.
    """
    path = Path(config)
    base = [*overrides, f"data.input={data}"]
    folder = Path(results) / path.parent.name / path.stem
    runs = []
    for point in grid_points(grid):
        cfg = load_config(str(path), [*base, *(f"{k}={json.dumps(v)}" for k, v in point.items())])
        cfg["output"] = str(folder / point_name(point))
        runs.append((point, cfg))
    points = []
    for point, cfg in runs:
        start = time.perf_counter()
        report = restore(cfg)
        seconds = time.perf_counter() - start if report.written else None
        if report.failed:  # scored on a subset it would not be comparable: the point fails whole
            points.append(Point(point, math.nan, math.nan, seconds, failed=len(report.failed)))
            continue
        out = Path(cfg["output"])
        summary = evaluate(pair_images(out / "recon", out / "label"), ["psnr", "ssim"], Networks()).summary
        points.append(Point(point, summary["psnr"], summary["ssim"], seconds))
    return points


def _as_written(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> the uint8 values its PNGs would hold (what evaluate.py scores)."""
    return torch.stack([torch.from_numpy(to_uint8(img)).permute(2, 0, 1) for img in x])


def classical_sweep(config: str, grid: Dict[str, List[Any]], data: str, overrides: Sequence[str] = ()) -> List[Point]:
    """Score the config's classical baseline with each grid point's keywords on the images of `data`,
    measured as the runs measure them (same operator, noise and per-image generators)."""
    cfg = load_config(str(config), [*overrides, f"data.input={data}"])
    op, noise = build_task(cfg)
    if op is None:
        raise ConfigError(f"{config}: task.operator is not set: a baseline restores measurements")
    size = load_model(resolve_path(cfg["model"]["checkpoint"]), **cfg["model"]["flags"]).image_size
    files = list(images_by_stem(resolve_path(data)).values())
    x = torch.stack([load_image(f, size, cfg["data"]["resize"]) for f in files])
    y = measure(op, noise, x, generators(cfg["seed"], range(len(files)), NOISE_STREAM, x.device))
    truth = _as_written(x)
    points = []
    for point in grid_points(grid):
        start = time.perf_counter()
        try:
            recon = _as_written(classical_restore(op, y, **point))
        except TypeError as err:
            raise ConfigError(f"--grid: {err}") from None
        points.append(Point(point, float(psnr(recon, truth).mean()), float(ssim(recon, truth).mean()),
                            time.perf_counter() - start))
    return points


def markdown(points: Sequence[Point], title: str) -> str:
    """A Markdown table of the points (best mean PSNR in bold) under a `title` line; "resumed" for a
    point whose run this call did not sample, "failed" for a point with failed images."""
    scored = [i for i, p in enumerate(points) if not p.failed]
    best = max(scored, key=lambda i: points[i].psnr) if scored else None
    lines = [title, "", "| setting | PSNR dB | SSIM | seconds |", "|---|---:|---:|---:|"]
    for i, p in enumerate(points):
        if p.failed:
            lines.append(f"| {p.name} | failed ({p.failed} image(s) non-finite or unreadable) | - | - |")
            continue
        value = f"**{p.psnr:.2f}**" if i == best else f"{p.psnr:.2f}"
        seconds = "resumed" if p.seconds is None else f"{p.seconds:.0f}"
        lines.append(f"| {p.name} | {value} | {p.ssim:.3f} | {seconds} |")
    return "\n".join(lines) + "\n"
