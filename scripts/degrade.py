"""Make degraded measurements from clean images, or the README grid of all operators.

    python scripts/degrade.py --config configs/degrade/gaussian_blur.yaml [--output DIR] [--overwrite]
    python scripts/degrade.py --grid docs/operators_grid.png

Config keys: ``operator: {name: ..., <params>}``, ``noise: {name: ..., <params>}`` (default none),
``input:`` an image file or folder, ``output:`` a folder, ``seed:`` (noise of image i uses
``torch.Generator().manual_seed(seed + i)``; one operator, i.e. one mask/kernel, serves the run).
Writes ``label/<name>.png`` (ground truth), ``input/<name>.png`` (``op.visualize(y)``: clamp((y+1)/2)
for image-shaped measurements, a log-magnitude image for phase retrieval), ``measurement/<name>.npy``
(the exact float32 y, noise included), ``operator.pt`` (``load_operator`` reloads it) and
``config.yaml``. Refuses a non-empty output folder unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guided_diffusion.image_io import list_images, load_image, save_image, to_uint8  # noqa: E402
from operators import Operator, build_noise, build_operator  # noqa: E402

OUTPUT_DIRS = ("input", "label", "measurement")
GRID_IMAGE = ROOT / "data" / "samples" / "astronaut_256.png"


def to_pil(image01: torch.Tensor) -> Image.Image:
    """``(C, H, W)`` in [0, 1] (C = 1 or 3) -> 8-bit PIL image (the same rounding as ``save_image``)."""
    array = to_uint8(image01 * 2 - 1)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def build_from_config(cfg: dict[str, Any]) -> tuple[Operator, Any]:
    """Operator and noise of a config (noise defaults to none)."""
    op_cfg = dict(cfg["operator"])
    noise_cfg = dict(cfg.get("noise") or {"name": "clean"})
    return build_operator(op_cfg.pop("name"), **op_cfg), build_noise(noise_cfg.pop("name"), **noise_cfg)


def degrade(cfg: dict[str, Any], overwrite: bool = False) -> Path:
    """Run one config (see module docstring); returns the output folder."""
    for key in ("operator", "input", "output"):
        if key not in cfg:
            raise SystemExit(f"config is missing '{key}'")
    out = Path(cfg["output"])
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"output folder {out} is not empty; pass --overwrite to replace its results")
    try:
        files = list_images(cfg["input"])
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    op, noise = build_from_config(cfg)
    for sub in OUTPUT_DIRS:
        shutil.rmtree(out / sub, ignore_errors=True)  # only our own sub-folders: no stale results
        (out / sub).mkdir(parents=True)
    seed = int(cfg.get("seed", 0))
    with torch.no_grad():
        for index, path in enumerate(files):
            x = load_image(path)[None]
            y = noise(op(x), generator=torch.Generator().manual_seed(seed + index))
            save_image(op.visualize(y)[0] * 2 - 1, out / "input" / f"{path.stem}.png")
            save_image(x[0], out / "label" / f"{path.stem}.png")
            np.save(out / "measurement" / f"{path.stem}.npy", y[0].float().numpy())
    op.save(out / "operator.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"{len(files)} image(s) -> {out}")
    return out


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


def main(argv: Optional[list[str]] = None) -> None:
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
        operator_grid(args.grid, sorted(args.grid_configs.glob("*.yaml")), args.grid_image)
    else:
        cfg = yaml.safe_load(args.config.read_text())
        if args.output is not None:
            cfg["output"] = str(args.output)
        degrade(cfg, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
