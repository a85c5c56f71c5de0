"""Runs of the command-line tools: run folders that are claimed, resumed and cleaned safely, the
restoration pipeline of `scripts/sample.py`, its classical baseline, and Ctrl-C handling."""
from .folder import RunFolder, RunFolderError, refuse_overlap
from .interrupt import Interrupted, Progress, interruptible

__all__ = ["Interrupted", "Progress", "RunFolder", "RunFolderError", "interruptible", "refuse_overlap"]
