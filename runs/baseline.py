"""The classical baseline of a restoration config (`scripts/baseline.py`): the exact measurements
`runs.restore` makes (same operator, seed and per-image noise generator), restored without a prior
(`evaluation.baselines`), written as label/, input/, recon/ and comparison.png into a run folder
of kind "baseline" (default: the config's output + `_<method>`)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from tqdm.auto import tqdm

from configs import ConfigError, pick_device, resolve_path
from evaluation.baselines import classical_method, classical_restore
from evaluation.shards import Rank
from guided_diffusion import load_model
from guided_diffusion.image_io import load_image

from .comparison import write_comparison
from .restore import RunReport, claim_output, is_done, write_image
from .task import NOISE_STREAM, build_task, generators, input_files, measure


def run(cfg: Dict[str, Any], output: Optional[str] = None, overwrite: bool = False) -> RunReport:
    """Restore every image of the config classically (those without a complete recon/ file);
    returns what was written, what was already done and the images that could not be read."""
    op, noise = build_task(cfg)
    if op is None:
        raise ConfigError("task.operator is not set: a baseline restores measurements")
    try:
        method = classical_method(op)
    except ValueError as err:
        raise ConfigError(f"task.operator: {err}") from None
    if not cfg["model"]["checkpoint"]:
        raise ConfigError("model.checkpoint is not set (the baseline works at the model's image size)")
    source = resolve_path(cfg["data"]["input"])
    files = input_files(cfg)
    size = load_model(resolve_path(cfg["model"]["checkpoint"]), **cfg["model"]["flags"]).image_size
    folder = claim_output(cfg, overwrite, Rank(0, 1, 0), [source], output or f"{cfg['output']}_{method}", "baseline")
    device = pick_device(cfg["device"])
    op = op.to(device)
    report = RunReport(folder=folder.root)
    try:
        for k, path in enumerate(tqdm(files, desc=method, unit="image")):
            if is_done(folder.root / "recon" / f"{path.stem}.png"):
                report.already_done += 1
                continue
            try:
                x = load_image(path, size, cfg["data"]["resize"], cfg["data"]["max_pixels"])[None].to(device)
            except (ValueError, OSError) as err:
                report.failed[path.name] = f"skipped, cannot use the file: {str(err).splitlines()[0]}"
                continue
            y = measure(op, noise, x, generators(cfg["seed"], [k], NOISE_STREAM, device))
            write_image(op.visualize(y)[0] * 2 - 1, folder.path(f"input/{path.stem}.png"))
            write_image(x[0], folder.path(f"label/{path.stem}.png"))
            write_image(classical_restore(op, y)[0], folder.path(f"recon/{path.stem}.png"))
            report.written.append(folder.root / "recon" / f"{path.stem}.png")
        try:
            write_comparison(folder)
        except OSError as err:  # a figure is not a result: the restorations stay, the run succeeds
            report.warnings.append(f"comparison.png not written: {err.strerror or err}")
    finally:
        folder.release()
    return report
