"""Restore images (or sample the prior): `python scripts/sample.py --config FILE [--set key=value ...]`.

Restoration (config `task.operator`): each image of `data.input` is brought to the model's size
(`data.resize`), degraded as y = noise(A x), and restored; the run writes `label/` (ground truth),
`input/` (the measurement, `op.visualize`), `recon/` (the restoration), all as
round(255 clamp((x + 1) / 2)) PNGs, plus `progress/` every `progress_every` steps if asked.
Without an operator it samples the prior into `samples/`. Randomness is per image: image k uses
generators seeded from (seed, k) for x_T / sampler noise and for the measurement noise, so results
do not depend on the batch size, and a rerun skips the images already written (resume). Files are
written atomically; nothing is overwritten without `--overwrite`; a folder holding a run with a
different config is refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from configs import ConfigError, load_config  # noqa: E402
from guided_diffusion import CheckpointError, load_model  # noqa: E402
from guided_diffusion.image_io import list_images, load_image, make_grid, save_image  # noqa: E402
from operators import OperatorUnavailable, build_noise, build_operator  # noqa: E402
from samplers import build_sampler  # noqa: E402

# Stream offsets keep the sampler's and the measurement noise's generators independent.
SAMPLER_STREAM, NOISE_STREAM = 0, 1


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


def generators(seed: int, indices: Sequence[int], stream: int, device: torch.device) -> List[torch.Generator]:
    """One generator per image, seeded from (seed, image index, stream)."""
    return [torch.Generator(device).manual_seed((seed * 1_000_003 + k) * 4 + stream) for k in indices]


def prepare_output(out: Path, cfg: Dict[str, Any], overwrite: bool) -> None:
    """Create `out`; refuse to mix runs: an existing folder must hold the same config (resume)."""
    saved = out / "config.yaml"
    if saved.exists() and not overwrite and yaml.safe_load(saved.read_text()) != cfg:
        raise ConfigError(f"{out} holds a run with a different config; choose another output or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _build(kind: str, spec: Dict[str, Any], builder) -> Any:
    params = dict(spec)
    name = params.pop("name")
    try:
        return builder(name, **params)
    except (TypeError, ValueError, FileNotFoundError, OperatorUnavailable) as err:
        raise ConfigError(f"task.{kind}: {err}") from None


def progress_saver(out: Path, stems: List[str], every: int):
    """A sampler callback writing x0_hat of each image every `every` steps (and at the end)."""
    if every <= 0:
        return None

    def callback(i: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if i % every == 0:
            for stem, img in zip(stems, x0_hat):
                save_image(img, out / "progress" / stem / f"x0_hat_{i:04d}.png")
    return callback


def restore(cfg: Dict[str, Any], sampler, model, device: torch.device, out: Path, overwrite: bool) -> List[Path]:
    try:
        files = list_images(resolve_path(cfg["data"]["input"]))
    except FileNotFoundError as err:
        raise ConfigError(f"data.input: {err}") from None
    files = files[: cfg["data"]["limit"]] if cfg["data"]["limit"] else files
    op = _build("operator", cfg["task"]["operator"], build_operator).to(device)
    noise = _build("noise", cfg["task"]["noise"] or {"name": "clean"}, build_noise)
    sigma = float(getattr(noise, "sigma", 0.0))
    written: List[Path] = []
    bs = cfg["batch_size"]
    for start in tqdm(range(0, len(files), bs), desc="images", unit="batch"):
        idx = list(range(start, min(start + bs, len(files))))
        stems = [files[k].stem for k in idx]
        if not overwrite and all((out / "recon" / f"{s}.png").exists() for s in stems):
            continue
        try:
            x = torch.stack([load_image(files[k], model.image_size, cfg["data"]["resize"]) for k in idx]).to(device)
        except (ValueError, OSError) as err:
            raise ConfigError(f"data.input: {err}") from None
        noise_gens = generators(cfg["seed"], idx, NOISE_STREAM, device)
        with torch.no_grad():
            y = torch.cat([noise(op.forward(x[j:j + 1]), generator=noise_gens[j]) for j in range(len(idx))])
        x_hat = sampler.sample(model, op, y, sigma=sigma, shape=tuple(x.shape),
                               generator=generators(cfg["seed"], idx, SAMPLER_STREAM, device),
                               callback=progress_saver(out, stems, cfg["progress_every"]), progress=True)
        for j, stem in enumerate(stems):
            save_image(op.visualize(y[j:j + 1])[0] * 2 - 1, out / "input" / f"{stem}.png")
            save_image(x[j], out / "label" / f"{stem}.png")
            save_image(x_hat[j], out / "recon" / f"{stem}.png")
            written.append(out / "recon" / f"{stem}.png")
    return written


def sample_prior(cfg: Dict[str, Any], sampler, model, device: torch.device, out: Path, overwrite: bool) -> List[Path]:
    written: List[Path] = []
    n, bs = cfg["num_samples"], cfg["batch_size"]
    shape = (model.in_channels, model.image_size, model.image_size)
    for start in tqdm(range(0, n, bs), desc="samples", unit="batch"):
        idx = list(range(start, min(start + bs, n)))
        paths = [out / "samples" / f"{k:05d}.png" for k in idx]
        if not overwrite and all(p.exists() for p in paths):
            continue
        with torch.no_grad():
            x = sampler.sample(model, shape=(len(idx), *shape), progress=True,
                               generator=generators(cfg["seed"], idx, SAMPLER_STREAM, device))
        for img, p in zip(x, paths):
            save_image(img, p)
            written.append(p)
    if cfg["grid"]:
        imgs = [load_image(p) for p in sorted((out / "samples").glob("*.png"))]
        save_image(make_grid(torch.stack(imgs)), out / "grid.png")
    return written


def run(cfg: Dict[str, Any], overwrite: bool = False) -> List[Path]:
    """Run a validated config; returns the paths of the images written in this call."""
    if not cfg["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint is not set")
    try:
        sampler = build_sampler(**cfg["sampler"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler: {err}") from None
    device = pick_device(cfg["device"])
    model = load_model(resolve_path(cfg["model"]["checkpoint"]), device=device, **cfg["model"]["flags"])
    out = Path(cfg["output"]).absolute()
    prepare_output(out, cfg, overwrite)
    job = restore if cfg["task"]["operator"] else sample_prior
    return job(cfg, sampler, model, device, out, overwrite)


def main(argv: Optional[List[str]] = None) -> int:
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
    print(f"wrote {len(written)} image(s) to {Path(cfg['output']).absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
