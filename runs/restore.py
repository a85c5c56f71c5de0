"""Restore images (or sample the prior) from a run config into a run folder; `scripts/sample.py` is
its command line.

Restoration (config `task.operator`): each image of `data.input` is brought to the model's size
(`data.resize`; `keep` leaves it at its own size for patch-based samplers), degraded as
y = noise(A x), and restored; the run writes `label/` (ground truth), `input/` (the measurement,
`op.visualize`), `recon/` (the restoration), `baseline/` (the classical restoration of y, where
`evaluation.baselines` has one), all as
round(255 clamp((x + 1) / 2)) PNGs, plus `progress/` every `progress_every` steps if asked, and
(with `grid`) `comparison.png` (`runs.comparison`). Without an operator it samples the prior into
`samples/`. Randomness is per image: image k uses generators seeded from (seed, k) for x_T /
sampler noise and for the measurement noise, so results do not depend on the batch size.

Safety (`runs.folder`): the output folder must be empty or a sample run of this tool; a rerun
continues it (finished images are kept; a batch stopped mid-trajectory restarts from its last
state, saved every `state_every_steps` steps or `state_every_minutes` minutes) if nothing that
changes the outputs differs (`runs.resume.first_difference`); `--overwrite` first removes the earlier
run's own files. Under torchrun each rank takes images rank, rank + N, ... (`evaluation.shards`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import yaml
from PIL import Image
from tqdm.auto import tqdm

from configs import ConfigError, pick_device, resolve_path
from evaluation.baselines import classical_method, classical_restore
from evaluation.shards import Rank, barrier, current_rank, shard
from guided_diffusion import load_model
from guided_diffusion.files import atomic_write_text
from guided_diffusion.image_io import load_image, make_grid, save_image
from guided_diffusion.runtime import ModelRunner
from samplers import NonFiniteError, build_sampler
from samplers.base import prior_samplers
from samplers.dps import with_noise_model

from .cli import print_failures
from .comparison import write_comparison
from .folder import RunFolder, RunFolderError
from .interrupt import Progress
from .resume import TrajectoryStates, first_difference
from .task import NOISE_STREAM, SAMPLER_STREAM, build_task, dry_run, generators, input_files, measure

CONFIG = "config.yaml"


@dataclass
class RunReport:
    """What a run did: the images written in this call, the images that failed (name -> reason),
    how many were already done by an earlier call, and warnings (a figure that could not be made)."""

    written: List[Path] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    already_done: int = 0
    warnings: List[str] = field(default_factory=list)
    folder: Optional[Path] = None


class RunWriteError(OSError):
    """Writing an output failed (full disk, permissions): one line naming the file; what was already
    written stays."""


def _saved_config(run: RunFolder) -> Optional[Dict[str, Any]]:
    path = run.root / CONFIG
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        raise RunFolderError(f"{path} is unreadable, so the run in {run.root} cannot be continued; "
                             f"pass --overwrite to start it again, or choose another output")
    return saved


def _saved_config_or_none(run: RunFolder, images: List[Path]) -> Optional[Dict[str, Any]]:
    """The saved config (None without one); an unreadable one blocks only a run with images to keep,
    else it is {}, a config that differs from any (the folder is taken over)."""
    try:
        return _saved_config(run)
    except RunFolderError:
        if images:
            raise
        return {}


def claim_output(cfg: Dict[str, Any], overwrite: bool, rank: Rank, inputs: Sequence[Path], output: Optional[str] = None,
                 kind: str = "sample") -> RunFolder:
    """Claim `output` (default cfg["output"]) for this config: continue the run there if only keys
    that change no output differ; a folder with no image yet is taken over whatever its config said.
    Under torchrun rank 0 claims (and cleans, with --overwrite) first; the others join it after."""
    root = output or cfg["output"]
    if rank.rank != 0:
        barrier(rank)
        return RunFolder.claim(root, kind, inputs, clean_temporary=False, join=True)
    run = RunFolder.claim(root, kind, inputs, overwrite, clean_temporary=rank.world_size == 1)
    try:
        images = [p for p in run.outputs() if p.suffix == ".png"]
        saved = None if overwrite else _saved_config_or_none(run, images)
        if saved is not None:
            diff = first_difference(saved, cfg)
            if diff and images:
                key, old, new = diff
                raise RunFolderError(f"{run.root} holds a run made with {key} = {old!r}, not {new!r}; use the "
                                     f"same value to continue it, --overwrite to replace it, or another output")
            if diff:
                states = len(run.state_files())
                run.remove_outputs()
                if states:
                    key, old, new = diff
                    print(f"warning: dropped {states} saved mid-trajectory state(s) in {run.root}: they were made "
                          f"with {key} = {old!r}, not {new!r}; the run starts again", file=sys.stderr)
        atomic_write_text(run.path(CONFIG), yaml.safe_dump(cfg, sort_keys=False))
    except BaseException:
        run.release()
        raise
    barrier(rank)
    return run


def has_classical(op) -> bool:
    """Whether `evaluation.baselines` restores this operator's measurements without a prior."""
    try:
        classical_method(op)
    except ValueError:
        return False
    return True


def is_done(path: Path) -> bool:
    """An output counts as done only if it is a complete, decodable image (not 0 bytes, not torn)
    that the run wrote (a link is not: the rerun replaces the link, not what it points to)."""
    if path.is_symlink():
        return False
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def write_image(x: torch.Tensor, path: Path) -> None:
    try:
        save_image(x, path)
    except OSError as err:
        raise RunWriteError(f"cannot write {path}: {err.strerror or err}") from None


class BatchRunner:
    """Samples batches of images with per-image generators, resumable mid-trajectory, and redoes a
    diverging batch image by image so only the diverging image is lost."""

    def __init__(self, cfg: Dict[str, Any], sampler, model, device: torch.device, states: TrajectoryStates,
                 progress: Progress, on_step: Optional[Callable[[List[int], int, torch.Tensor], None]] = None):
        self.cfg, self.sampler, self.model, self.device = cfg, sampler, model, device
        self.states, self.progress, self.on_step = states, progress, on_step

    def __call__(self, ks: List[int], shape: Sequence[int], op=None, y: Optional[torch.Tensor] = None,
                 sigma: float = 0.0) -> torch.Tensor:
        """x_0 of images ks (global indices); raises NonFiniteError for a diverging batch."""
        gens = generators(self.cfg["seed"], ks, SAMPLER_STREAM, self.device)
        total = self.sampler.num_steps
        dtype = y.dtype if y is not None and y.is_floating_point() else torch.float32
        start = self.states.resume(ks, shape, dtype, total, gens, op)
        save_state = self.states.saver(ks, gens, op)
        self.progress.steps = total

        def callback(i: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
            self.progress.step = total - i
            save_state(i, x_t, x0_hat)
            if self.on_step is not None:
                self.on_step(ks, i, x0_hat)

        try:
            x = self.sampler.sample(self.model, op, y, sigma=sigma, shape=tuple(shape), generator=gens,
                                    callback=callback, progress=True, device=self.device, start=start)
        except NonFiniteError:
            self.states.clear(ks)
            raise
        except BaseException:  # Ctrl-C, SIGTERM, an error: keep the last step reached
            self.states.flush()
            raise
        self.progress.step = None
        return x

    def forget(self, ks: List[int]) -> None:
        self.states.clear(ks)

    def plan(self, mine: List[int], pending: List[int], batch_size: int,
             total: Optional[int] = None) -> List[List[int]]:
        """Batches of the pending images: saved mid-trajectory batches first (whatever the batch
        size now), then the rest in order. The saved state of a batch of this shard that is partly
        written (a kill between two images' files) is dropped: its other images are redone; so is
        a state naming an image past the run's `total`, or one sharing an image with an earlier state."""
        first: List[List[int]] = []
        for saved in self.states.saved_batches(total):
            earlier = next((b for b in first if set(b) & set(saved)), None)
            if earlier is not None:
                self.states.drop(self.states.path_of(saved),
                                 f"it shares images with {self.states.path_of(earlier).name}")
            elif set(saved) <= set(pending):
                first.append(saved)
            elif set(saved) <= set(mine):
                self.states.clear(saved)
        taken = {k for b in first for k in b}
        rest = [k for k in pending if k not in taken]
        return first + [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]


def restore(cfg: Dict[str, Any], files: List[Path], runner: BatchRunner, model, op, noise, run: RunFolder, rank: Rank,
            report: RunReport) -> None:
    """Restore every image of `files` in this rank's shard that has no complete recon/ file yet."""
    sigma = float(getattr(noise, "sigma", 0.0))
    mine = shard(range(len(files)), rank.rank, rank.world_size)
    pending = [k for k in mine if not is_done(run.root / "recon" / f"{files[k].stem}.png")]
    report.already_done = len(mine) - len(pending)
    # Blind operators learn their parameters per image batch: every batch starts from the same state.
    initial = {k: v.clone() for k, v in op.state_dict().items()}
    classical = has_classical(op)
    keep = cfg["data"]["resize"] == "keep"
    every = cfg["progress_every"]

    def save_progress(ks: List[int], i: int, x0_hat: torch.Tensor) -> None:
        if i % every == 0:
            for k, img in zip(ks, x0_hat):
                write_image(img, run.path(f"progress/{files[k].stem}/x0_hat_{i:04d}.png"))
    runner.on_step = save_progress if every > 0 else None

    def load(k: int) -> Optional[torch.Tensor]:
        try:
            return load_image(files[k], model.image_size, cfg["data"]["resize"], cfg["data"]["max_pixels"])
        except (ValueError, OSError) as err:
            report.failed[files[k].name] = f"skipped, cannot use the file: {str(err).splitlines()[0]}"
            return None

    def restore_batch(ks: List[int], x: torch.Tensor) -> None:
        if keep:
            try:
                if min(x.shape[-2:]) < runner.sampler.patch_size:
                    raise ConfigError(f"the image is {x.shape[-1]}x{x.shape[-2]}, smaller than "
                                      f"sampler.patch_size {runner.sampler.patch_size}")
                dry_run(op, *x.shape[1:], runner.device, what="the image's")
            except ConfigError as err:
                report.failed.update({files[k].name: f"skipped: {err}" for k in ks})
                return
        op.load_state_dict(initial)
        y = measure(op, noise, x, generators(cfg["seed"], ks, NOISE_STREAM, runner.device))
        runner.progress.image = mine.index(ks[0]) + 1
        try:
            x_hat = runner(ks, x.shape, op, y, sigma)
        except NonFiniteError as err:
            if len(ks) == 1:
                report.failed[files[ks[0]].name] = str(err)
                return
            for j, k in enumerate(ks):
                restore_batch([k], x[j:j + 1])
            return
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. out of memory: the batch fails, the run goes on
            report.failed.update({files[k].name: f"{type(err).__name__}: {str(err).splitlines()[0]}" for k in ks})
            return
        for j, k in enumerate(ks):
            stem = files[k].stem
            write_image(op.visualize(y[j:j + 1])[0] * 2 - 1, run.path(f"input/{stem}.png"))
            write_image(x[j], run.path(f"label/{stem}.png"))
            if classical:  # the same y restored without a prior, for comparison.png
                write_image(classical_restore(op, y[j:j + 1])[0], run.path(f"baseline/{stem}.png"))
            write_image(x_hat[j], run.path(f"recon/{stem}.png"))  # last: its presence marks the image done
            report.written.append(run.root / "recon" / f"{stem}.png")
        runner.forget(ks)

    runner.progress.total = len(mine)
    for ks in tqdm(runner.plan(mine, pending, cfg["batch_size"], len(files)), desc="images", unit="batch"):
        loaded = [(k, img) for k, img in ((k, load(k)) for k in ks) if img is not None]
        for shape in dict.fromkeys(img.shape for _, img in loaded):  # one size per batch (data.resize keep)
            group = [(k, img) for k, img in loaded if img.shape == shape]
            restore_batch([k for k, _ in group], torch.stack([img for _, img in group]).to(runner.device))
    if cfg["grid"] and rank.world_size == 1 and (report.written or not (run.root / "comparison.png").exists()):
        try:
            write_comparison(run)
        except OSError as err:  # a figure is not a result: the images stay, the run succeeds
            report.warnings.append(f"comparison.png not written: {err.strerror or err}")


def sample_prior(cfg: Dict[str, Any], runner: BatchRunner, model, run: RunFolder, rank: Rank,
                 report: RunReport) -> None:
    """Sample num_samples images of the prior into samples/ (those not written yet)."""
    shape = (model.in_channels, model.image_size, model.image_size)
    mine = shard(range(cfg["num_samples"]), rank.rank, rank.world_size)
    pending = [k for k in mine if not is_done(run.root / "samples" / f"{k:05d}.png")]
    report.already_done = len(mine) - len(pending)
    runner.progress.total = len(mine)
    for ks in tqdm(runner.plan(mine, pending, cfg["batch_size"], cfg["num_samples"]), desc="samples", unit="batch"):
        runner.progress.image = mine.index(ks[0]) + 1
        try:
            with torch.no_grad():
                x = runner(ks, (len(ks), *shape))
        except NonFiniteError as err:
            report.failed.update({f"{ks[j]:05d}.png": str(err) for j in err.images})
            continue
        for k, img in zip(ks, x):
            write_image(img, run.path(f"samples/{k:05d}.png"))
            report.written.append(run.root / "samples" / f"{k:05d}.png")
        runner.forget(ks)
    done = sorted((run.root / "samples").glob("*.png"))
    if cfg["grid"] and rank.world_size == 1 and done:  # other ranks may still be writing their samples
        try:
            write_image(make_grid(torch.stack([load_image(p) for p in done])), run.path("grid.png"))
        except OSError as err:
            report.warnings.append(f"grid.png not written: {err.strerror or err}")


def run(cfg: Dict[str, Any], overwrite: bool = False, progress: Optional[Progress] = None) -> RunReport:
    """Run a validated config; returns what was written in this call and what failed.

    Everything that can be refused (sampler, operator, noise, device, input, output folder, model,
    the operator at the model's size) is refused with a ConfigError before the folder is changed.
    """
    if not cfg["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint is not set")
    try:
        # DPS / DPPS weigh their loss by the noise model of the task unless the config says otherwise.
        sampler = build_sampler(**with_noise_model(cfg["sampler"], cfg["task"]["noise"]))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler: {err}") from None
    op, noise = build_task(cfg)
    if op is None and sampler.needs_operator:
        raise ConfigError(f"sampler: {sampler.name} restores a measurement, so it needs task.operator (none is "
                          f"set); only {' and '.join(prior_samplers())} sample the prior without one")
    try:
        sampler.check_task(op)
    except ValueError as err:
        raise ConfigError(f"sampler: {err}") from None
    try:
        rank = current_rank()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    inputs = [resolve_path(cfg["data"]["input"])] if op is not None else []
    files = input_files(cfg) if op is not None else []  # refused before the folder is touched
    RunFolder.check(cfg["output"], "sample", inputs, join=rank.rank != 0)
    device = pick_device(cfg["device"], rank.local_rank if rank.world_size > 1 else None)
    mc = cfg["model"]
    model = ModelRunner(load_model(resolve_path(mc["checkpoint"]), device=device, **mc["flags"]),
                        precision=mc["precision"], channels_last=mc["channels_last"], compile=mc["compile"],
                        sdpa=mc["sdpa"], checkpointing=mc["checkpointing"])
    keep = cfg["data"]["resize"] == "keep"
    if keep and sampler.patch_size is None:
        raise ConfigError("data.resize: keep restores every image at its own size, which needs "
                          f"sampler.patch_size (e.g. {model.image_size}, the model's size) and patch_stride")
    if op is not None:
        op = op.to(device)
        if not keep:  # with keep, each image size is tried when its image comes (`restore`)
            dry_run(op, model.in_channels, model.image_size, model.image_size, device)
    run_folder = claim_output(cfg, overwrite, rank, inputs)
    progress = progress if progress is not None else Progress()
    states = TrajectoryStates(run_folder, cfg["state_every_steps"], cfg["state_every_minutes"])
    runner = BatchRunner(cfg, sampler, model, device, states, progress)
    report = RunReport(folder=run_folder.root)
    try:
        if op is None:
            sample_prior(cfg, runner, model, run_folder, rank, report)
        else:
            restore(cfg, files, runner, model, op, noise, run_folder, rank, report)
    finally:
        run_folder.release()
    return report


def print_report(report: RunReport) -> int:
    """The run's summary on stdout / stderr; returns the exit status (1 if any image failed)."""
    done = f" ({report.already_done} already done)" if report.already_done else ""
    print(f"wrote {len(report.written)} image(s) to {report.folder}{done}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.failed:
        print_failures("image(s) failed", report.failed)
        return 1
    return 0
