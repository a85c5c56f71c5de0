"""Ctrl-C and SIGTERM end a run with one line and the conventional exit status (128 + signal).

`interruptible()` turns SIGTERM into the same `Interrupted` exception as Ctrl-C, so `finally`
blocks run (the sampling state is saved) and the script's main prints where the run stopped.
`Interrupted` is, like KeyboardInterrupt, no `Exception`: the `except Exception` that turns a
damaged file into one line (a checkpoint, a saved state) lets it through. `Progress` is where the
run says what it is doing, for that line. `quiet_start()` covers the seconds before that handling
starts (imports of torch and the rest): this module imports nothing heavy, nor does `runs`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import Iterator, Optional


class Interrupted(BaseException):
    """The run was stopped by a signal; `signum` is SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@dataclass
class Progress:
    """What the run is doing now: the image (1-based, of `total`) and the sampling step."""

    image: int = 0
    total: int = 0
    step: Optional[int] = None
    steps: Optional[int] = None

    def where(self) -> str:
        """Where the run is, to follow "interrupted at": "image 2 of 8, step 31 of 100"."""
        if not self.total:
            return "the start, before the first image"
        at = f"image {self.image} of {self.total}"
        return at if self.step is None else f"{at}, step {self.step} of {self.steps}"


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT (Ctrl-C) and SIGTERM raise `Interrupted`."""
    def handler(signum: int, frame) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def quiet_start() -> None:
    """Outside `interruptible()` (the imports of torch and the rest, argument parsing), Ctrl-C and
    SIGTERM end the command at once with one line and 128 + signal, instead of a traceback from
    inside an import. Call it first thing in a script's `__main__`, and do all work inside
    `interruptible()` (`runs.cli.exit_status`): no file is being written when this handler runs.

    The process ends with os._exit: an exception raised in the middle of an import can be caught or
    turned into another one by the library being imported (numpy and scipy half-imported recurse)."""
    def handler(signum: int, frame) -> None:
        print("interrupted while starting, before any work", file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
