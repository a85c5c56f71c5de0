"""Sample images with a diffusion model: `python scripts/sample.py --config FILE [--set key=value ...]`.

Writes `samples/00000.png ...` (and `grid.png`) under the config's `output` folder, plus the
resolved `config.yaml`. Image k of a run depends only on the seed and its batch, so a rerun skips
the images already written (resume) and never overwrites a file unless `--overwrite` is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from configs import ConfigError, load_config  # noqa: E402
from guided_diffusion import CheckpointError, load_model  # noqa: E402
from guided_diffusion.image_io import load_image, make_grid, save_image  # noqa: E402
from samplers import build_sampler  # noqa: E402


def resolve_path(path: str) -> Path:
    """A relative path is taken from the working directory, else from the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO / p if (REPO / p).exists() else p


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def prepare_output(out: Path, cfg: Dict[str, Any], overwrite: bool) -> None:
    """Create `out`; refuse to mix runs: an existing folder must hold the same config (resume)."""
    saved = out / "config.yaml"
    if saved.exists() and not overwrite and yaml.safe_load(saved.read_text()) != cfg:
        raise ConfigError(f"{out} holds a run with a different config; choose another output or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(cfg, sort_keys=False))


def run(cfg: Dict[str, Any], overwrite: bool = False) -> List[Path]:
    """Generate cfg['num_samples'] images; returns the paths written in this call."""
    if not cfg["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint is not set")
    try:
        sampler = build_sampler(**cfg["sampler"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler: {err}") from None
    device = pick_device(cfg["device"])
    model = load_model(resolve_path(cfg["model"]["checkpoint"]), device=device, **cfg["model"]["flags"])
    size, channels = model.image_size, model.in_channels
    out = resolve_output(cfg["output"])
    prepare_output(out, cfg, overwrite)
    written: List[Path] = []
    n, bs = cfg["num_samples"], cfg["batch_size"]
    for b, start in enumerate(tqdm(range(0, n, bs), desc="batches")):
        paths = [out / "samples" / f"{k:05d}.png" for k in range(start, min(start + bs, n))]
        if not overwrite and all(p.exists() for p in paths):
            continue
        # One generator per batch, seeded from (seed, batch index): a resumed run draws the same noise.
        g = torch.Generator(device).manual_seed(cfg["seed"] * 1_000_003 + b)
        with torch.no_grad():
            x = sampler.sample(model, shape=(len(paths), channels, size, size), generator=g, progress=True)
        for img, p in zip(x, paths):
            if overwrite or not p.exists():
                save_image(img, p)
                written.append(p)
    if cfg["grid"]:
        imgs = [load_image(p) for p in sorted((out / "samples").glob("*.png"))]
        save_image(make_grid(torch.stack(imgs)), out / "grid.png")
    return written


def resolve_output(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path.cwd() / p


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set sampler.steps=50 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        written = run(cfg, overwrite=args.overwrite)
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} image(s) to {resolve_output(cfg['output'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
