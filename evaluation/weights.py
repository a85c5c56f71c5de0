"""Where locally stored network weights are found; nothing is ever downloaded at run time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .errors import EvaluationError


def local_weights(what: str, filename: str, url: str, env_var: str, path: Optional[str] = None) -> Path:
    """The weights file for `what`: `path` if given, else $`env_var`, else torch's hub cache
    (`$TORCH_HOME/hub/checkpoints/<filename>`, where torchvision and torch-fidelity would cache it).

    A missing file raises a one-line EvaluationError naming the URL to download and where to put it.
    """
    chosen = path or os.environ.get(env_var) or str(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    found = Path(chosen).expanduser()
    if not found.is_file():
        raise EvaluationError(f"{what} weights not found at {found.absolute()}: download {url} and put it there "
                              f"(or point {env_var} at the file)")
    return found


def load_state_dict(path: Path, what: str) -> dict:
    """Read a plain tensor state dict with `weights_only=True` (a pickled payload never runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files (Ctrl-C is no Exception)
        raise EvaluationError(f"{path} is not a readable {what} state dict ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise EvaluationError(f"{path} is not a {what} state dict (got {type(state).__name__})")
    return state
