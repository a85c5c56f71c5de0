"""Train the ADM UNet on a folder of images: `python scripts/train.py --config FILE [--set key=value ...] [--resume]`.

The run folder (`output`) holds config.yaml, log.jsonl (one line per `log_every` steps: step and
the means of loss, mse, vlb, grad_norm, sec_per_step), train_state.pt (model, EMA, optimizer,
loss scaler, step, random states and config; every `save_every` steps and at the end) and
model.pt, the EMA weights as {"flags", "state_dict"} for `guided_diffusion.load_model`. Files are
replaced atomically. `--resume` continues from train_state.pt exactly as if the run had not
stopped (bit-identical on CPU); only steps, save_every, log_every, output and device may change.
An existing folder is not reused without `--resume` or `--overwrite`.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

import yaml  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from configs import ConfigError  # noqa: E402
from runs import RunFolder  # noqa: E402
from runs.cli import exit_status  # noqa: E402
from configs import add_config_arguments, pick_device, resolve_path  # noqa: E402
from training import (ImageCrops, Trainer, atomic_write, check_resumable, export_model,  # noqa: E402
                      load_train_config, load_train_state, model_flags, save_torch)

CONFIG, LOG, STATE, MODEL = "config.yaml", "log.jsonl", "train_state.pt", "model.pt"


def prepare_output(out: Path, cfg: Dict[str, Any], resume: bool, overwrite: bool,
                   source: Path) -> Optional[Dict[str, Any]]:
    """Claim `out` as a train run folder (`runs.folder`: new, empty, or a train run of this tool)
    and write config.yaml; returns the saved training state when resuming, else None."""
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite starts it again; pass one of them")
    RunFolder.check(out, "train", [source])
    state = _resumed_state(out, cfg) if resume else None
    if not (resume or overwrite) and RunFolder.marker_kind(out) and RunFolder(out, "train").outputs():
        raise ConfigError(f"{out} holds a training run; pass --resume to continue it or --overwrite to start again")
    run = RunFolder.claim(out, "train", [source], overwrite=overwrite)
    run.record([CONFIG, LOG, STATE, MODEL])  # before any of them is written
    atomic_write(out / CONFIG, lambda f: f.write(yaml.safe_dump(cfg, sort_keys=False).encode()))
    return state


def _resumed_state(out: Path, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The run's saved state, checked against `cfg`; the log is cut back to the saved step."""
    if not (out / STATE).is_file():
        raise ConfigError(f"--resume: {out / STATE} does not exist; start the run without --resume")
    state = load_train_state(out / STATE)
    check_resumable(state["config"], cfg, str(out))
    if state["step"] > cfg["steps"]:
        raise ConfigError(f"--resume: the run in {out} is at step {state['step']}, past steps={cfg['steps']}")
    # Log lines written after the checkpoint describe steps that will be taken again.
    kept = [line for line in _read_log(out) if line["step"] <= state["step"]]
    atomic_write(out / LOG, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))
    return state


def _read_log(out: Path) -> List[Dict[str, float]]:
    """The log's rows; a torn last line (a kill during a write by an older version, or a line cut
    by hand) is dropped, as the rewrite on resume drops rows past the checkpoint."""
    path = out / LOG
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if n == len(lines):  # the text after the last newline: the torn tail
                break
            raise ConfigError(f"--resume: {path} line {n} is not JSON; delete that line and resume") from None
    return rows


def _append_log(out: Path, window: List[Dict[str, float]], step: int, seconds: float) -> Dict[str, float]:
    """Append one JSON line with a single write of the whole line (O_APPEND) and fsync, so a kill
    leaves the log with or without the line, never with part of it."""
    row = {"step": step, **{k: sum(s[k] for s in window) / len(window) for k in window[0]},
           "sec_per_step": seconds / len(window)}
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(out / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # never through a link
    try:
        before = os.fstat(fd).st_size
        if os.write(fd, data) != len(data):  # a short write (disk full): take the part back
            os.ftruncate(fd, before)
            raise OSError(errno.ENOSPC, f"could not append a line to {out / LOG}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return row


def save(out: Path, trainer: Trainer, cfg: Dict[str, Any]) -> None:
    """Write model.pt (EMA weights) and train_state.pt, each atomically."""
    export_model(out / MODEL, model_flags(cfg), trainer.ema)
    save_torch({**trainer.state_dict(), "config": cfg}, out / STATE)


def train(cfg: Dict[str, Any], resume: bool = False, overwrite: bool = False) -> Path:
    """Run a validated training config to cfg["steps"]; returns the path of the exported model."""
    device = pick_device(cfg["device"])
    try:
        data = ImageCrops(resolve_path(cfg["data"]["input"]), int(model_flags(cfg)["image_size"]),
                          cfg["data"]["load_size"], cfg["data"]["flip"])
    except (FileNotFoundError, ValueError, OSError) as err:
        raise ConfigError(f"data.input: {err}") from None
    out = Path(cfg["output"]).absolute()
    state = prepare_output(out, cfg, resume, overwrite, resolve_path(cfg["data"]["input"]))
    trainer = Trainer(cfg, device)
    if state is not None:
        trainer.load_state_dict(state)
    if trainer.precision != cfg["precision"]:
        print(f"note: precision {cfg['precision']} applies on CUDA only; training in fp32 on {device}", file=sys.stderr)
    print(f"{len(data)} image(s) from {cfg['data']['input']}; "
          f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters; device {device}", file=sys.stderr)
    window: List[Dict[str, float]] = []
    tic = time.perf_counter()
    with tqdm(total=cfg["steps"], initial=trainer.step, desc="train", unit="step") as bar:
        while trainer.step < cfg["steps"]:
            window.append(trainer.train_step(data))
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]['loss']:.4f}", refresh=False)
            done = trainer.step == cfg["steps"]
            if trainer.step % cfg["log_every"] == 0 or done:
                _append_log(out, window, trainer.step, time.perf_counter() - tic)
                window, tic = [], time.perf_counter()
            if trainer.step % cfg["save_every"] == 0 or done:
                save(out, trainer, cfg)
    return out / MODEL


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, "optim.lr=2e-4")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in the output folder")
    parser.add_argument("--overwrite", action="store_true", help="start again in a non-empty output folder")
    args = parser.parse_args(argv)

    def action() -> int:
        cfg = load_train_config(args.config, args.overrides)
        try:
            model_path = train(cfg, resume=args.resume, overwrite=args.overwrite)
        except FloatingPointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"trained to step {cfg['steps']}; EMA model: {model_path}")
        return 0
    # train_state.pt is saved every save_every steps: --resume continues from the last one.
    return exit_status(action, resume="continue from the last saved step with --resume")


if __name__ == "__main__":
    sys.exit(main())
