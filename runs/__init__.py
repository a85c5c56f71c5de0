"""Runs of the command-line tools: run folders that are claimed, resumed and cleaned safely, the
restoration pipeline of `scripts/sample.py`, its classical baseline, and Ctrl-C handling.

The names below load on first use, so `runs.interrupt` can be imported before torch (a script's
first line handles Ctrl-C during its imports)."""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Interrupted": "interrupt", "Progress": "interrupt", "interruptible": "interrupt",
          "RunFolder": "folder", "RunFolderError": "folder", "refuse_overlap": "folder"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'runs' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
