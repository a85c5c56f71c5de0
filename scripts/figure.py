"""Comparison figure of a table: `python scripts/figure.py --table NAME [--limit N] [--images K]`.

One grid row per (task, image): the measurement, each method's restoration, the ground truth, read
from the run folders `reproduce.py` writes (same `--limit` / `--results` / `--published`). Methods
without a run for a task leave a white tile. Measurements of another size (SR, phase retrieval) are
shown nearest-resized to the image size. Writes a PNG (default results/figures/<table>[-nN].png).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from configs import ConfigError, load_config  # noqa: E402
from evaluation import EvaluationError, get_table, load_tables, run_folder  # noqa: E402
from evaluation.files import refuse_existing  # noqa: E402
from evaluation.tables import PUBLISHED, Table  # noqa: E402
from guided_diffusion.image_io import list_images, load_image, make_grid, save_image, to_uint8  # noqa: E402
from configs import resolve_path  # noqa: E402

PAD, HEADER, LEFT = 2, 16, 96  # grid padding, title strip height, row-label strip width (pixels)


def task_runs(table: Table, limit: Optional[int], results: Optional[Path]) -> Dict[str, Dict[str, Path]]:
    """task -> method label -> run folder, for rows whose run has restorations."""
    runs: Dict[str, Dict[str, Path]] = {}
    for row in table.rows:
        if not row.config:
            continue
        folder = run_folder(load_config(str(resolve_path(row.config)))["output"], limit, results)
        if (folder / "recon").is_dir():
            runs.setdefault(row.task, {})[row.label] = folder
    if not runs:
        raise EvaluationError(f"no run of table {table.name!r} has a recon/ folder yet; run scripts/reproduce.py first")
    return runs


def _tile(path: Path, size: Tuple[int, int]) -> torch.Tensor:
    img = load_image(path)
    if img.shape[-2:] != size:
        img = F.interpolate(img[None], size=size, mode="nearest")[0]
    return img


def grid_rows(runs: Dict[str, Dict[str, Path]], methods: List[str], n_images: int) -> Tuple[torch.Tensor, List[str]]:
    """(rows * columns, 3, H, W) tiles in [-1, 1] and one label per grid row."""
    tiles, labels = [], []
    for task, by_method in runs.items():
        folders = list(by_method.values())
        stems = sorted(set.intersection(*({p.stem for p in list_images(f / "recon")} for f in folders)))
        for stem in stems[:n_images]:
            label = load_image(folders[0] / "label" / f"{stem}.png")
            size = tuple(label.shape[-2:])
            row = [_tile(folders[0] / "input" / f"{stem}.png", size)]
            for m in methods:
                row.append(_tile(by_method[m] / "recon" / f"{stem}.png", size) if m in by_method
                           else torch.ones_like(label))
            tiles += row + [label]
            labels.append(f"{task}\n{stem}" if task else stem)
    if not tiles:
        raise EvaluationError("the runs share no restored image")
    return torch.stack(tiles), labels


def compose(grid: torch.Tensor, columns: List[str], labels: List[str], tile: int) -> torch.Tensor:
    """Add the column titles above and the row labels left of a make_grid image; (3, H', W') in [-1, 1]."""
    body = Image.fromarray(to_uint8(grid))
    canvas = Image.new("RGB", (body.width + LEFT, body.height + HEADER), "white")
    canvas.paste(body, (LEFT, HEADER))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(columns):
        while len(name) > 1 and draw.textlength(name) > tile:  # keep titles inside their column
            name = name[:-1]
        draw.text((LEFT + PAD + k * (tile + PAD), 2), name, fill="black")
    for r, text in enumerate(labels):
        draw.multiline_text((4, HEADER + PAD + r * (tile + PAD) + 4), text, fill="black")
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="table name in the published-numbers file")
    parser.add_argument("--limit", type=int, help="the --limit the runs were made with")
    parser.add_argument("--results", type=Path, help="the --results the runs were made with")
    parser.add_argument("--published", default=str(PUBLISHED), help="published-numbers YAML file")
    parser.add_argument("--images", type=int, default=2, help="images per task (first stems in order)")
    parser.add_argument("--out", type=Path, help="PNG path (default results/figures/<table>[-nN].png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    args = parser.parse_args(argv)
    name = f"{args.table}-n{args.limit}" if args.limit else args.table
    out = args.out or Path("results/figures") / f"{name}.png"
    try:
        refuse_existing([out], args.overwrite)
        table = get_table(load_tables(Path(args.published)), args.table)
        runs = task_runs(table, args.limit, args.results)
        methods = list(dict.fromkeys(m for by_method in runs.values() for m in by_method))
        tiles, labels = grid_rows(runs, methods, max(1, args.images))
        columns = ["measurement", *methods, "ground truth"]
        grid = make_grid(tiles, ncol=len(columns), pad=PAD)
        save_image(compose(grid, columns, labels, tiles.shape[-1]), out)
    except (EvaluationError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(labels)} row(s) x {len(columns)} column(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
