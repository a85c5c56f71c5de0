"""One run per folder at a time: `<run>/.dfrestore/lock`, held with an exclusive `flock` by the
process of the run (under torchrun: by rank 0, for every rank) for as long as it uses the folder.

The file names its holder (pid, host, start time, command) for the one line a second run prints
when it is refused. The kernel drops a flock when its process ends, however it ends (SIGKILL, a
crash, a lost node), so a lock a killed run left behind is free and the next run takes it over;
two runs taking over the same left-over lock cannot both win, because flock is atomic and the file
is never deleted or replaced while runs use it (deleting or replacing a lock file that others may
hold open is what makes create-exclusive lock files racy). Within one process a folder's lock is
counted: nested claims of the same folder share it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Optional

LOCK = "lock"
_RETRY_SECONDS = 0.5  # another process's probe holds the lock for microseconds: try a while before refusing


class FolderInUse(Exception):
    """The folder's lock is held by another process; `holder` says by whom, in words."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


class _Held:
    def __init__(self, fd: int):
        self.fd, self.count = fd, 1


_HELD: Dict[str, _Held] = {}


def _key(hidden: Path) -> str:
    return os.path.realpath(hidden / LOCK)


def _ours(hidden: Path) -> Optional[_Held]:
    """This process's hold on the lock file now at `hidden`, if it is still that file."""
    held = _HELD.get(_key(hidden))
    if held is None:
        return None
    try:
        same = os.path.samestat(os.fstat(held.fd), os.stat(hidden / LOCK, follow_symlinks=False))
    except OSError:
        same = False
    if not same:  # the file was removed (a nested run's, by --overwrite): the hold is void
        os.close(_HELD.pop(_key(hidden)).fd)
        return None
    return held


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        return (f"pid {int(info['pid'])} on {info['host']}, started {info['started']}: {info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that is starting"


def _try_lock(fd: int, mode: int) -> bool:
    """flock without waiting, retried briefly; False when another process holds it."""
    deadline = time.monotonic() + _RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def acquire(hidden: Path) -> bool:
    """Hold the lock of the run folder whose hidden folder is `hidden` (which must exist). Raises
    FolderInUse naming the holder; OSError when the file cannot be made. Returns False when the
    file system has no locks (the run goes on unlocked; the caller warns)."""
    held = _ours(hidden)
    if held is not None:
        held.count += 1
        return True
    fd = os.open(hidden / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        if not _try_lock(fd, fcntl.LOCK_EX):
            raise FolderInUse(_describe(fd))
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return False
        raise
    except BaseException:
        os.close(fd)
        raise
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": shlex.join([os.path.basename(sys.executable), *sys.argv])}
    _HELD[_key(hidden)] = _Held(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    except OSError:  # a full disk: the lock holds all the same, its holder is unnamed
        pass
    return True


def release(hidden: Path) -> None:
    """Give back one hold of this process on the lock (the last one frees it)."""
    held = _ours(hidden)
    if held is None:
        return
    held.count -= 1
    if held.count == 0:
        _close(_key(hidden))


def _close(key: str) -> None:
    held = _HELD.pop(key)
    try:
        os.ftruncate(held.fd, 0)  # no stale holder named after the run
    except OSError:
        pass
    os.close(held.fd)


def release_all() -> None:
    """Free every lock this process holds (the end of a command)."""
    for key in list(_HELD):
        _close(key)


def holder(hidden: Path) -> Optional[str]:
    """Who holds the lock of this folder if another process does, in words; None when it is free,
    missing, or held by this process. Changes nothing."""
    if _ours(hidden) is not None:
        return None
    try:
        fd = os.open(hidden / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _describe(fd)
    except OSError:  # a file system without locks
        return None
    finally:
        os.close(fd)

