"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed over it.

A run killed at any moment leaves either the old file or the complete new one, never half a file,
and readers (other ranks, a resumed run) never see a partial write. The temporary file is named
`.<target name>.<random>` + `TMP_SUFFIX`, a suffix no user file carries, so a later run can find
and remove the ones a killed run left without touching anything else (`is_temporary`). The final
file gets the permissions the user's umask gives a new file (mkstemp alone would leave 0600).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]
TMP_SUFFIX = ".dfrestore-partial"
_TMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TMP_SUFFIX) + "$")


def is_temporary(path: PathLike) -> bool:
    """True for a temporary file `atomic_write` makes (and a killed run may leave behind)."""
    return bool(_TMP_NAME.match(Path(path).name))


def default_file_mode() -> int:
    """0o666 less the process umask: what open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call write(f) on a temporary binary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), default_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:  # a full disk: name the file
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 text atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
