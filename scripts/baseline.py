"""Classical baseline of a restoration config: `python scripts/baseline.py --config FILE [--set key=value ...]`.

Each image of `data.input` is brought to the model's size and degraded exactly as
`scripts/sample.py` degrades it (same operator, seed and per-image noise generator on the same
device, so y is the same tensor), then restored without a prior: bicubic upsampling for bicubic
`super_resolution`, harmonic inpainting for `inpainting` (`evaluation/baselines.py`). Writes
`label/`, `input/`, `recon/` and `comparison.png` like sample.py to `--output` (default: the
config's output + `_bicubic` / `_harmonic`), ready for `scripts/evaluate.py`. An existing output
folder is refused unless `--overwrite`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tqdm.auto import tqdm  # noqa: E402

from configs import ConfigError, add_config_arguments, load_config, pick_device, resolve_path  # noqa: E402
from evaluation.baselines import classical_method, classical_restore  # noqa: E402
from guided_diffusion import CheckpointError, load_model  # noqa: E402
from guided_diffusion.image_io import images_by_stem, load_image, save_image  # noqa: E402
from operators import build_noise, build_operator  # noqa: E402
from scripts.sample import NOISE_STREAM, build_task_part, generators, measure, write_comparison  # noqa: E402


def run(cfg: Dict[str, Any], output: Optional[str] = None, overwrite: bool = False) -> Path:
    """Restore every image of the config classically; returns the output folder."""
    spec = cfg["task"]["operator"]
    if not spec:
        raise ConfigError("task.operator is not set: a baseline restores measurements")
    op = build_task_part("operator", spec, build_operator)
    noise = build_task_part("noise", cfg["task"]["noise"] or {"name": "clean"}, build_noise)
    try:
        method = classical_method(op)
    except ValueError as err:
        raise ConfigError(f"task.operator: {err}") from None
    if not cfg["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint is not set (the baseline works at the model's image size)")
    size = load_model(resolve_path(cfg["model"]["checkpoint"])).image_size
    try:
        files = list(images_by_stem(resolve_path(cfg["data"]["input"])).values())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.input: {err}") from None
    files = files[: cfg["data"]["limit"]] if cfg["data"]["limit"] else files
    out = Path(output or f"{cfg['output']}_{method}").absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite or choose another --output")
    device = pick_device(cfg["device"])
    op = op.to(device)
    for k, path in enumerate(tqdm(files, desc=method, unit="image")):
        try:
            x = load_image(path, size, cfg["data"]["resize"])[None].to(device)
        except (ValueError, OSError) as err:
            print(f"skipped {path.name}: {str(err).splitlines()[0]}", file=sys.stderr)
            continue
        y = measure(op, noise, x, generators(cfg["seed"], [k], NOISE_STREAM, device))
        save_image(op.visualize(y)[0] * 2 - 1, out / "input" / f"{path.stem}.png")
        save_image(x[0], out / "label" / f"{path.stem}.png")
        save_image(classical_restore(op, y)[0], out / "recon" / f"{path.stem}.png")
    write_comparison(out)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, "data.limit=4")
    parser.add_argument("--output", help="output folder (default: <config output>_<method>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder's images")
    args = parser.parse_args(argv)
    try:
        out = run(load_config(args.config, args.overrides), args.output, args.overwrite)
    except (ConfigError, CheckpointError) as err:
        print(f"error: {args.config or '--set'}: {err}", file=sys.stderr)
        return 2
    print(f"wrote the classical restorations to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
