"""Make degraded measurements from clean images, or the README grid of all operators.

    python scripts/degrade.py --config configs/degrade/gaussian_blur.yaml [--output DIR] [--overwrite]
    python scripts/degrade.py --grid docs/operators_grid.png

Config keys: ``operator: {name: ..., <params>}``, ``noise: {name: ..., <params>}`` (default none),
``input:`` an image file or folder, ``output:`` a folder, ``seed:`` (noise of image i uses
``torch.Generator().manual_seed(seed + i)``; one operator, i.e. one mask/kernel, serves the run).
Writes ``label/<name>.png`` (ground truth), ``input/<name>.png`` (``op.visualize(y)``: clamp((y+1)/2)
for image-shaped measurements, a log-magnitude image for phase retrieval), ``measurement/<name>.npy``
(the exact float32 y, noise included), ``operator.pt`` (``load_operator`` reloads it) and
``config.yaml`` into a new or empty folder, or over an earlier degrade run with ``--overwrite``
(which removes that run's own files first, nothing else; see ``runs.folder``). Unreadable images
are skipped and named (exit 1); a bad config is one line (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from configs import ConfigError, read_yaml_mapping, resolve_path  # noqa: E402
from guided_diffusion.files import atomic_write, atomic_write_text  # noqa: E402
from guided_diffusion.image_io import load_image, save_image, to_uint8  # noqa: E402
from operators import Operator, build_noise, build_operator  # noqa: E402
from runs import RunFolder, RunFolderError  # noqa: E402
from runs.cli import exit_status, print_failures  # noqa: E402
from runs.task import build_task_part, image_files  # noqa: E402
GRID_IMAGE = ROOT / "data" / "samples" / "astronaut_256.png"


def to_pil(image01: torch.Tensor) -> Image.Image:
    """``(C, H, W)`` in [0, 1] (C = 1 or 3) -> 8-bit PIL image (the same rounding as ``save_image``)."""
    array = to_uint8(image01 * 2 - 1)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def build_from_config(cfg: dict[str, Any]) -> tuple[Operator, Any]:
    """Operator and noise of a config (noise defaults to none); bad blocks are one-line ConfigErrors."""
    return (build_task_part("operator", cfg["operator"], build_operator),
            build_task_part("noise", cfg.get("noise") or {"name": "clean"}, build_noise))


def degrade(cfg: dict[str, Any], overwrite: bool = False) -> dict[str, str]:
    """Run one config (see module docstring); returns the images skipped (name -> reason).

    The output must be a new or empty folder, or an earlier degrade run (replaced only with
    `overwrite`, which removes that run's own files first); it may not contain the input nor lie
    inside it. Relative paths are taken as `scripts/sample.py` takes them (`configs.resolve_path`).
    Unreadable images are skipped and returned (the command line names them, exit 1).
    """
    for key in ("operator", "input", "output"):
        if key not in cfg:
            raise ConfigError(f"config is missing '{key}'")
    source = resolve_path(str(cfg["input"]))
    files = image_files(str(cfg["input"]), "input")
    op, noise = build_from_config(cfg)
    out = RunFolder.check(cfg["output"], "degrade", [source])
    if RunFolder.marker_kind(out) is not None and not overwrite:
        raise RunFolderError(f"{out} holds an earlier degrade run; pass --overwrite to make it again")
    run = RunFolder.claim(out, "degrade", [source], overwrite=overwrite)
    seed = int(cfg.get("seed", 0))
    skipped: dict[str, str] = {}
    with torch.no_grad():
        for index, path in enumerate(files):
            try:
                x = load_image(path)[None]
            except (ValueError, OSError) as err:
                skipped[path.name] = str(err).splitlines()[0]
                continue
            y = noise(op(x), generator=torch.Generator().manual_seed(seed + index))
            save_image(op.visualize(y)[0] * 2 - 1, run.path(f"input/{path.stem}.png"))
            save_image(x[0], run.path(f"label/{path.stem}.png"))
            array = y[0].float().numpy()
            atomic_write(run.path(f"measurement/{path.stem}.npy"), lambda f: np.save(f, array))
    op.save(run.path("operator.pt"))
    atomic_write_text(run.path("config.yaml"), yaml.safe_dump(cfg, sort_keys=False))
    print(f"{len(files) - len(skipped)} image(s) -> {out}")
    return skipped


def grid_image() -> Path:
    """The grid's test image: skimage's astronaut (512 px, bundled) reduced to 256 x 256."""
    if not GRID_IMAGE.exists():
        from skimage import data

        GRID_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS).save(GRID_IMAGE)
    return GRID_IMAGE


def operator_grid(out_path: Path, configs: list[Path], image: Optional[Path] = None,
              tile: int = 256, columns: int = 4) -> Path:
    """Ground truth plus ``visualize(noise(A x))`` for every config, nearest-resized to ``tile``."""
    x = load_image(image or grid_image())[None]
    tiles = [("ground truth", to_pil((x[0] + 1) / 2))]
    with torch.no_grad():
        for config in configs:
            cfg = yaml.safe_load(config.read_text())
            op, noise = build_from_config(cfg)
            y = noise(op(x), generator=torch.Generator().manual_seed(int(cfg.get("seed", 0))))
            tiles.append((config.stem, to_pil(op.visualize(y)[0])))
    rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (columns * tile, rows * tile), "white")
    for i, (label, picture) in enumerate(tiles):
        picture = picture.convert("RGB").resize((tile, tile), Image.NEAREST)
        draw = ImageDraw.Draw(picture)
        box = draw.textbbox((4, 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill="black")
        draw.text((4, 4), label, fill="white")
        canvas.paste(picture, ((i % columns) * tile, (i // columns) * tile))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_path, optimize=True)
    print(f"grid of {len(tiles)} tiles -> {out_path}")
    return out_path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="degradation config (YAML)")
    parser.add_argument("--output", type=Path, help="output folder (overrides the config's 'output')")
    parser.add_argument("--overwrite", action="store_true", help="replace results in a non-empty output folder")
    parser.add_argument("--grid", type=Path, metavar="PNG", help="write the operator grid to PNG instead")
    parser.add_argument("--grid-configs", type=Path, default=ROOT / "configs" / "degrade",
                        help="folder of configs, one grid tile each (default configs/degrade)")
    parser.add_argument("--grid-image", type=Path, help="grid image (default: astronaut, saved to data/samples)")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.grid is None):
        parser.error("give exactly one of --config and --grid")
    if args.grid is not None:
        def grid() -> int:
            operator_grid(args.grid, sorted(args.grid_configs.glob("*.yaml")), args.grid_image)
            return 0
        return exit_status(grid, resume="run the command again")

    def action() -> int:
        cfg = read_yaml_mapping(str(args.config))
        if args.output is not None:
            cfg["output"] = str(args.output)
        skipped = degrade(cfg, overwrite=args.overwrite)
        if skipped:
            print_failures("image(s) skipped", skipped)
        return 1 if skipped else 0
    return exit_status(action, resume="run the same command with --overwrite to make the folder again")


if __name__ == "__main__":
    sys.exit(main())
