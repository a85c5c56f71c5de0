"""Resuming a run: which config changes may continue a run, and mid-trajectory sampling states.

A rerun of the same command continues where the last one stopped: finished images are kept, and a
batch interrupted mid-trajectory restarts from its last saved state (x_t, the step, every
per-image generator's state, the operator's parameters), giving the uninterrupted run's PNGs byte
for byte on the CPU. A saved state is checked whole before use; a foreign or damaged one is dropped
with one line naming it and its batch starts again.
"""
from __future__ import annotations

import copy
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

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


def _warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)  # on its own line, between the progress bars


def _batch_of(name: str) -> Optional[List[int]]:
    """The image indices a state file name stands for ("images-3-4.pt" -> [3, 4]), or None for a
    name this tool does not write (not increasing distinct indices in their plain spelling)."""
    match = _STATE_NAME.fullmatch(name)
    if match is None:
        return None
    images = [int(k) for k in match.group(1).split("-")]
    canonical = "-".join(str(k) for k in images) == match.group(1)
    return images if canonical and all(a < b for a, b in zip(images, images[1:])) else None


_STATE_NAME = re.compile(r"images-([0-9]+(?:-[0-9]+)*)\.pt")
_STATE_KEYS = ("images", "next_index", "x_t", "generators", "operator")


class TrajectoryStates:
    """Mid-trajectory states of the batches of a run, in `<run>/.dfrestore/state/`.

    `saver(...)` returns a sampler callback that saves the state every `every_steps` steps (0: off)
    or when `every_minutes` have passed since the last save (0: off), atomically; `flush()` saves
    the last state the callback saw (on Ctrl-C / SIGTERM); `resume(...)` continues a batch from
    its saved state once that is checked whole; `clear(images)` removes it once the batch is
    written. A state that cannot be used (a foreign or damaged file) is dropped with one line
    naming it (`warn`), and its batch starts again.
    """

    def __init__(self, run: RunFolder, every_steps: int, every_minutes: float,
                 warn: Callable[[str], None] = _warn):
        self.run, self.every_steps, self.every_minutes = run, int(every_steps), float(every_minutes)
        self.warn = warn
        self._pending: Optional[Tuple[Path, Dict[str, Any]]] = None
        self._saved_at = time.monotonic()

    def path_of(self, images: Sequence[int]) -> Path:
        return self.run.state_dir / f"images-{'-'.join(str(k) for k in images)}.pt"

    def drop(self, path: Path, reason: str) -> None:
        """Delete an unusable state, saying so in one line."""
        self.warn(f"dropped the saved state {path}: {reason}; its images start again from the first step")
        path.unlink(missing_ok=True)

    def saved_batches(self, total: Optional[int] = None) -> List[List[int]]:
        """Image-index lists of the saved states, oldest batch first. A file of the state pattern
        whose name is not this tool's, or names an image index >= total (when given), is dropped."""
        found = []
        for path in self.run.state_files():
            images = _batch_of(path.name)
            if images is None:
                self.drop(path, "its name is not images-<increasing image indices>.pt")
            elif total is not None and images[-1] >= total:
                self.drop(path, f"the run has {total} image(s), numbered from 0")
            else:
                found.append(images)
        return sorted(found)

    def resume(self, images: Sequence[int], shape: Sequence[int], dtype: torch.dtype, steps: int,
               generators: Sequence[torch.Generator],
               op: Optional[torch.nn.Module]) -> Optional[Tuple[int, torch.Tensor]]:
        """`Sampler.sample`'s start from this batch's saved state, with the generators and the
        operator put back to that moment; None, with nothing changed, when there is no usable state.

        The state is checked whole first: x_t of `shape` and `dtype`, a next step index in
        0..steps-1, one generator state per image of the size of `generators`' states, the
        operator's parameters by name, shape and dtype. An unusable one is dropped with one line."""
        path = self.path_of(images)
        if path.is_symlink() or not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # damaged, foreign, another torch version (Ctrl-C is not an Exception)
            self.drop(path, f"it cannot be read ({type(err).__name__})")
            return None
        problem = _state_problem(state, list(images), tuple(shape), dtype, steps, generators, op)
        if problem is None:
            before = [g.get_state() for g in generators]
            try:
                for g, saved in zip(generators, state["generators"]):
                    g.set_state(saved)
            except RuntimeError as err:  # bytes of the right size that are no generator state
                for g, old in zip(generators, before):
                    g.set_state(old)
                problem = f"its generator states are refused ({str(err).splitlines()[0]})"
        if problem is not None:
            self.drop(path, problem)
            return None
        if op is not None and state["operator"]:
            op.load_state_dict(state["operator"])
        return int(state["next_index"]), state["x_t"]

    def saver(self, images: Sequence[int], generators: Sequence[torch.Generator],
              op: Optional[torch.nn.Module]) -> Callable[[int, torch.Tensor, torch.Tensor], None]:
        """A sampler callback recording the state after each step, saved at the chosen cadence."""
        path = self.path_of(images)

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
        path = self.path_of(images)
        if path.is_file():
            os.unlink(path)


def _state_problem(state: Any, images: List[int], shape: Tuple[int, ...], dtype: torch.dtype, steps: int,
                   generators: Sequence[torch.Generator], op: Optional[torch.nn.Module]) -> Optional[str]:
    """Why a loaded state cannot continue this batch, in words; None when it can."""
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
        return f"it lacks {', '.join(missing)}"
    saved_images = state["images"]
    if not isinstance(saved_images, list) or not all(type(k) is int for k in saved_images) or saved_images != images:
        return f"it names images {saved_images!r}, not {images}"
    i = state["next_index"]
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < steps:
        return f"its next_index {i!r} is not a step index in 0..{steps - 1}"
    x_t = state["x_t"]
    if not isinstance(x_t, torch.Tensor) or tuple(x_t.shape) != shape or x_t.dtype != dtype:
        got = f"{tuple(x_t.shape)} {x_t.dtype}" if isinstance(x_t, torch.Tensor) else type(x_t).__name__
        return f"its x_t is {got}, not {shape} {dtype}"
    if not bool(torch.isfinite(x_t).all()):
        return "its x_t holds NaN or Inf"
    saved, size = state["generators"], generators[0].get_state().numel()
    if not isinstance(saved, (list, tuple)) or len(saved) != len(images):
        count = len(saved) if isinstance(saved, (list, tuple)) else "no list of"
        return f"it holds {count} generator state(s) for {len(images)} image(s)"
    if not all(isinstance(g, torch.Tensor) and g.dtype == torch.uint8 and g.dim() == 1 and g.numel() == size
               for g in saved):
        return f"its generator states are not {size}-byte states"
    expected = op.state_dict() if op is not None else {}
    params = state["operator"]
    if not isinstance(params, dict) or set(params) != set(expected):
        return "its operator parameters are not this operator's"
    for name, value in expected.items():
        got = params[name]
        if not isinstance(got, torch.Tensor) or (got.shape, got.dtype) != (value.shape, value.dtype):
            return f"its operator parameter {name} is not {tuple(value.shape)} {value.dtype}"
    return None
