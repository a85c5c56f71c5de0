"""Resuming a run: which config changes may continue a run, and mid-trajectory sampling states.

A rerun of the same command continues where the last one stopped: finished images are kept, and a
batch interrupted mid-trajectory restarts from its last saved state (x_t, the step, every
per-image generator's state, the operator's parameters), giving the uninterrupted run's PNGs byte
for byte on the CPU.
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from configs import resolve_path
from guided_diffusion.files import atomic_write

from .folder import RunFolder

# Keys that do not change any output, so a run may continue with other values: how images are
# grouped (per-image seeds), how many are done or too large to read, where the folder is, what is
# logged, how often the state is saved, and activation checkpointing (the same arithmetic, recomputed).
NOT_OUTPUT_KEYS = ("batch_size", "output", "data.limit", "data.max_pixels", "num_samples", "grid", "progress_every",
                   "model.checkpointing", "state_every_steps", "state_every_minutes")
PATH_KEYS = ("model.checkpoint", "data.input")


def _pop(cfg: Dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        cfg = cfg.get(part) or {}
    if isinstance(cfg, dict):
        cfg.pop(last, None)


def output_identity(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The part of a config that decides the outputs, with file paths made absolute."""
    ident = copy.deepcopy(cfg)
    for key in NOT_OUTPUT_KEYS:
        _pop(ident, key)
    for key in PATH_KEYS:
        block, name = key.split(".")
        value = (ident.get(block) or {}).get(name)
        if isinstance(value, str):
            ident[block][name] = str(resolve_path(value).resolve())
    return ident


def _walk(a: Any, b: Any, prefix: str) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            yield from _walk(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def first_difference(saved: Dict[str, Any], new: Dict[str, Any]) -> Optional[Tuple[str, Any, Any]]:
    """(dotted key, saved value, new value) of the first output-changing difference, or None."""
    key = next(_walk(output_identity(saved), output_identity(new), ""), None)
    return None if key is None else (key, _lookup(saved, key), _lookup(new, key))


def _lookup(cfg: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


class TrajectoryStates:
    """Mid-trajectory states of the batches of a run, in `<run>/.dfrestore/state/`.

    `saver(...)` returns a sampler callback that saves the state every `every_steps` steps (0: off)
    or when `every_minutes` have passed since the last save (0: off), atomically; `flush()` saves
    the last state the callback saw (on Ctrl-C / SIGTERM); `load(images)` returns a saved state of
    exactly that batch; `clear(images)` removes it once the batch is written.
    """

    def __init__(self, run: RunFolder, every_steps: int, every_minutes: float):
        self.run, self.every_steps, self.every_minutes = run, int(every_steps), float(every_minutes)
        self._pending: Optional[Tuple[Path, Dict[str, Any]]] = None
        self._saved_at = time.monotonic()

    def _path(self, images: Sequence[int]) -> Path:
        return self.run.state_dir / f"images-{'-'.join(str(k) for k in images)}.pt"

    def saved_batches(self) -> List[List[int]]:
        """Image-index lists of the saved states, oldest batch first."""
        if not self.run.state_dir.is_dir():
            return []
        found = [[int(k) for k in p.stem.split("-")[1:]] for p in self.run.state_dir.glob("images-*.pt")]
        return sorted(found)

    def load(self, images: Sequence[int]) -> Optional[Dict[str, Any]]:
        """The saved state of this batch, or None (also for a file that cannot be read)."""
        path = self._path(images)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a state from another torch version, a damaged disk: start the batch again
            return None
        return state if isinstance(state, dict) and state.get("images") == list(images) else None

    def saver(self, images: Sequence[int], generators: Sequence[torch.Generator],
              op: Optional[torch.nn.Module]) -> Callable[[int, torch.Tensor, torch.Tensor], None]:
        """A sampler callback recording the state after each step, saved at the chosen cadence."""
        path = self._path(images)

        def callback(i: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
            if i == 0:  # the trajectory is complete; the batch is written next
                self._pending = None
                return
            # Copies stay on the device here (no per-step sync with a GPU); flush() moves them to the CPU.
            state = {"images": list(images), "next_index": i - 1, "x_t": x_t.detach().clone(),
                     "generators": [g.get_state() for g in generators],
                     "operator": {k: v.detach().clone() for k, v in op.state_dict().items()} if op else {}}
            self._pending = (path, state)
            due_steps = self.every_steps > 0 and (i % self.every_steps == 0)
            due_time = self.every_minutes > 0 and time.monotonic() - self._saved_at >= 60 * self.every_minutes
            if due_steps or due_time:
                self.flush()
        return callback

    def flush(self) -> None:
        """Save the last state the callback saw, if it is newer than the saved one."""
        if self._pending is None:
            return
        path, state = self._pending
        state = {**state, "x_t": state["x_t"].cpu(), "operator": {k: v.cpu() for k, v in state["operator"].items()}}
        atomic_write(path, lambda f: torch.save(state, f))
        self._pending, self._saved_at = None, time.monotonic()

    def clear(self, images: Sequence[int]) -> None:
        self._pending = None
        path = self._path(images)
        if path.is_file():
            os.unlink(path)


def restore_state(state: Dict[str, Any], generators: Sequence[torch.Generator],
                  op: Optional[torch.nn.Module]) -> Tuple[int, torch.Tensor]:
    """Put the generators and the operator back to a saved state; returns `Sampler.sample`'s start."""
    for g, saved in zip(generators, state["generators"]):
        g.set_state(saved)
    if op is not None and state["operator"]:
        op.load_state_dict(state["operator"])
    return int(state["next_index"]), state["x_t"]
