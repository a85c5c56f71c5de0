"""Restore images (or sample the prior): `python scripts/sample.py --config FILE [--set key=value ...]`.

Restoration (config `task.operator`): each image of `data.input` is brought to the model's size
(`data.resize`), degraded as y = noise(A x), and restored; the run writes `label/` (ground truth),
`input/` (the measurement, `op.visualize`), `recon/` (the restoration), all as
round(255 clamp((x + 1) / 2)) PNGs, plus `progress/` every `progress_every` steps if asked, and
(with `grid`) `comparison.png`: measured | restored | truth for the first 16 images.
Without an operator it samples the prior into `samples/`. Randomness is per image: image k uses
generators seeded from (seed, k) for x_T / sampler noise and for the measurement noise, so results
do not depend on the batch size, and a rerun skips the images already written (resume). Files are
written atomically; nothing is overwritten without `--overwrite`; a folder holding a run with a
different config is refused.

Under `torchrun --nproc_per_node N scripts/sample.py ...` each rank (RANK / WORLD_SIZE from the
environment) takes images rank, rank + N, ... of the sorted list (`evaluation.shards`), runs on
cuda:LOCAL_RANK (device auto or cuda) and writes its own files into the shared output folder;
seeds stay per global image index, so the outputs equal a single-process run's. No grid.png then.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from configs import ConfigError, add_config_arguments, load_config, pick_device, resolve_path  # noqa: E402
from guided_diffusion.files import atomic_write_text  # noqa: E402
from evaluation.shards import Rank, current_rank, shard  # noqa: E402
from guided_diffusion import CheckpointError, load_model  # noqa: E402
from guided_diffusion.runtime import ModelRunner  # noqa: E402
from guided_diffusion.image_io import images_by_stem, load_image, make_grid, save_image  # noqa: E402
from operators import OperatorUnavailable, build_noise, build_operator  # noqa: E402
from samplers import NonFiniteError, build_sampler  # noqa: E402
from scripts.figure import compose, grid_rows  # noqa: E402

COMPARISON_IMAGES = 16  # rows of comparison.png: a picture to look at, not a record of the run
# Stream offsets keep the sampler's and the measurement noise's generators independent.
SAMPLER_STREAM, NOISE_STREAM = 0, 1


def generators(seed: int, indices: Sequence[int], stream: int, device: torch.device) -> List[torch.Generator]:
    """One generator per image, seeded from (seed, image index, stream)."""
    return [torch.Generator(device).manual_seed((seed * 1_000_003 + k) * 4 + stream) for k in indices]


def measure(op, noise, x: torch.Tensor, noise_generators: List[torch.Generator]) -> torch.Tensor:
    """y = noise(A x), image j with noise_generators[j]: (N, C, H, W) in [-1, 1] -> A's output shape."""
    with torch.no_grad():
        return torch.cat([noise(op.forward(x[j:j + 1]), generator=g) for j, g in enumerate(noise_generators)])


def prepare_output(out: Path, cfg: Dict[str, Any], overwrite: bool, rank: Rank = Rank(0, 1, 0)) -> None:
    """Create `out`; refuse to mix runs: an existing folder must hold the same config (resume).
    Every rank checks; rank 0 writes config.yaml, atomically, so no rank reads half a file."""
    saved = out / "config.yaml"
    if saved.exists() and not overwrite and yaml.safe_load(saved.read_text()) != cfg:
        raise ConfigError(f"{out} holds a run with a different config; choose another output or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    if rank.world_size == 1:  # with several ranks a temporary file may be another rank's live write
        for stale in out.rglob(".*.tmp"):  # left by a killed run; the final files are never partial
            stale.unlink()
    if rank.rank == 0:
        atomic_write_text(saved, yaml.safe_dump(cfg, sort_keys=False))


def build_task_part(kind: str, spec: Dict[str, Any], builder) -> Any:
    """builder(spec["name"], **rest) for task.operator / task.noise; bad specs become one-line ConfigErrors."""
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


@dataclass
class RunReport:
    """What a run did: the images written in this call and the images that failed (name -> reason)."""

    written: List[Path] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)


def restore(cfg: Dict[str, Any], sampler, model, op, noise, device: torch.device, out: Path, overwrite: bool,
            rank: Rank = Rank(0, 1, 0)) -> RunReport:
    """Restore every image of this rank's shard that has no recon/ file yet (all with overwrite).

    An unreadable image, or one whose size the resize policy refuses, is reported and skipped; a
    batch whose sampling diverges (NaN/Inf) is redone image by image (per-image seeds make that
    give the same results) so only the diverging image is lost.
    """
    try:  # outputs are named by stem: two inputs with one stem would overwrite each other
        files = list(images_by_stem(resolve_path(cfg["data"]["input"])).values())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.input: {err}") from None
    files = files[: cfg["data"]["limit"]] if cfg["data"]["limit"] else files
    sigma = float(getattr(noise, "sigma", 0.0))
    report = RunReport()
    # Global indices: seeds do not depend on the shard, the batch size or what was done before.
    mine = shard(range(len(files)), rank.rank, rank.world_size)
    pending = [k for k in mine if overwrite or not (out / "recon" / f"{files[k].stem}.png").exists()]

    def load(k: int) -> Optional[torch.Tensor]:
        try:
            return load_image(files[k], model.image_size, cfg["data"]["resize"])
        except (ValueError, OSError) as err:
            report.failed[files[k].name] = f"skipped, cannot use the file: {str(err).splitlines()[0]}"
            return None

    def restore_batch(ks: List[int], x: torch.Tensor) -> None:
        stems = [files[k].stem for k in ks]
        y = measure(op, noise, x, generators(cfg["seed"], ks, NOISE_STREAM, device))
        try:
            x_hat = sampler.sample(model, op, y, sigma=sigma, shape=tuple(x.shape),
                                   generator=generators(cfg["seed"], ks, SAMPLER_STREAM, device),
                                   callback=progress_saver(out, stems, cfg["progress_every"]), progress=True)
        except NonFiniteError as err:
            if len(ks) == 1:
                report.failed[files[ks[0]].name] = str(err)
                return
            for j, k in enumerate(ks):
                restore_batch([k], x[j:j + 1])
            return
        for j, stem in enumerate(stems):
            save_image(op.visualize(y[j:j + 1])[0] * 2 - 1, out / "input" / f"{stem}.png")
            save_image(x[j], out / "label" / f"{stem}.png")
            save_image(x_hat[j], out / "recon" / f"{stem}.png")  # last: its presence marks the image done
            report.written.append(out / "recon" / f"{stem}.png")

    bs = cfg["batch_size"]
    for start in tqdm(range(0, len(pending), bs), desc="images", unit="batch"):
        loaded = [(k, load(k)) for k in pending[start:start + bs]]
        ks = [k for k, img in loaded if img is not None]
        if ks:
            restore_batch(ks, torch.stack([img for _, img in loaded if img is not None]).to(device))
    fresh = report.written or not (out / "comparison.png").exists()
    if cfg["grid"] and rank.world_size == 1 and fresh:
        write_comparison(out)
    return report


def write_comparison(out: Path) -> None:
    """<out>/comparison.png: measurement | restoration | ground truth, a row for each of the first
    COMPARISON_IMAGES images of <out>/recon (none written while recon/ is empty)."""
    if not any((out / "recon").glob("*.png")):
        return
    tiles, stems = grid_rows({"": {"restored": out}}, ["restored"], COMPARISON_IMAGES)
    save_image(compose(make_grid(tiles, ncol=3), ["measured", "restored", "truth"], stems,
                       tiles.shape[-1]), out / "comparison.png")


def sample_prior(cfg: Dict[str, Any], sampler, model, device: torch.device, out: Path, overwrite: bool,
                 rank: Rank = Rank(0, 1, 0)) -> RunReport:
    report = RunReport()
    n, bs = cfg["num_samples"], cfg["batch_size"]
    shape = (model.in_channels, model.image_size, model.image_size)
    mine = shard(range(n), rank.rank, rank.world_size)
    for start in tqdm(range(0, len(mine), bs), desc="samples", unit="batch"):
        idx = mine[start:start + bs]
        paths = [out / "samples" / f"{k:05d}.png" for k in idx]
        if not overwrite and all(p.exists() for p in paths):
            continue
        try:
            with torch.no_grad():
                x = sampler.sample(model, shape=(len(idx), *shape), progress=True,
                                   generator=generators(cfg["seed"], idx, SAMPLER_STREAM, device))
        except NonFiniteError as err:
            report.failed.update({paths[j].name: str(err) for j in err.images})
            continue
        for img, p in zip(x, paths):
            save_image(img, p)
            report.written.append(p)
    if cfg["grid"] and rank.world_size == 1:  # other ranks may still be writing their samples
        imgs = [load_image(p) for p in sorted((out / "samples").glob("*.png"))]
        save_image(make_grid(torch.stack(imgs)), out / "grid.png")
    return report


def run(cfg: Dict[str, Any], overwrite: bool = False) -> RunReport:
    """Run a validated config; returns what was written in this call and what failed."""
    if not cfg["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint is not set")
    try:
        sampler = build_sampler(**cfg["sampler"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler: {err}") from None
    spec = cfg["task"]["operator"]
    # Operator and noise are built before the model loads, so their errors come before any work.
    op = build_task_part("operator", spec, build_operator) if spec else None
    noise = build_task_part("noise", cfg["task"]["noise"] or {"name": "clean"}, build_noise) if spec else None
    try:
        rank = current_rank()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    device = pick_device(cfg["device"], rank.local_rank if rank.world_size > 1 else None)
    mc = cfg["model"]
    model = ModelRunner(load_model(resolve_path(mc["checkpoint"]), device=device, **mc["flags"]),
                        precision=mc["precision"], channels_last=mc["channels_last"], compile=mc["compile"],
                        sdpa=mc["sdpa"], checkpointing=mc["checkpointing"])
    if op is not None:
        op = op.to(device)
        try:  # a mask of another size, a factor that does not divide the image: refused here
            with torch.no_grad():
                op.forward(torch.zeros(1, model.in_channels, model.image_size, model.image_size, device=device))
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"task.operator {spec['name']!r} cannot act on the model's "
                              f"{model.image_size}x{model.image_size} images: {str(err).splitlines()[0]}") from None
    out = Path(cfg["output"]).absolute()
    prepare_output(out, cfg, overwrite, rank)
    if op is None:
        return sample_prior(cfg, sampler, model, device, out, overwrite, rank)
    return restore(cfg, sampler, model, op, noise, device, out, overwrite, rank)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, "sampler.steps=50")
    parser.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        report = run(cfg, overwrite=args.overwrite)
    except (ConfigError, CheckpointError) as err:
        where = "" if not args.config or str(err).startswith(args.config) else f"{args.config}: "
        print(f"error: {where}{err}", file=sys.stderr)
        return 2
    print(f"wrote {len(report.written)} image(s) to {Path(cfg['output']).absolute()}")
    if report.failed:
        print(f"{len(report.failed)} image(s) failed:", file=sys.stderr)
        for name, reason in report.failed.items():
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
