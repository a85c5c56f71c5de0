"""Files a training run writes: each through a temporary file and an atomic rename, so a killed run
leaves either the previous complete file or the new one under the final name, never a torn one.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Union

import torch

from guided_diffusion.files import atomic_write
from guided_diffusion.models import CheckpointError, read_checkpoint

PathLike = Union[str, os.PathLike]
STATE_KEYS = ("step", "device_type", "model", "ema", "optimizer", "scaler", "rng", "config")


def save_torch(obj: Any, path: PathLike) -> None:
    """torch.save `obj` atomically; keep it to tensors and plain containers so weights_only loads it."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_train_state(path: PathLike) -> Dict[str, Any]:
    """The training state saved by `save_torch`, read with weights_only=True (no pickled code runs).

    read_checkpoint returns a payload without a top-level "state_dict" entry whole, under that key.
    """
    state = dict(read_checkpoint(os.fspath(path))["state_dict"])
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training state saved by scripts/train.py (missing {', '.join(missing)})")
    return state


def export_model(path: PathLike, flags: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write {"flags", "state_dict"} (float32, CPU): the format `guided_diffusion.load_model` reads."""
    weights = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
               for k, v in state_dict.items()}
    save_torch({"flags": dict(flags), "state_dict": weights}, path)
