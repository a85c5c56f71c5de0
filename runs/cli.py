"""The command lines' shared ending: exceptions to one line and an exit status, failure lists.

Exit statuses: 0 done, 1 the run finished but something failed (an image, a file that could not be
written), 2 refused before any work (a config, path or checkpoint problem), 128 + signal when
interrupted (130 Ctrl-C, 143 SIGTERM).
"""
from __future__ import annotations

import sys
from typing import Callable, Mapping, Optional

from configs import ConfigError
from guided_diffusion import CheckpointError

from . import lock
from .interrupt import Interrupted, Progress, interruptible


def print_failures(what: str, failures: Mapping[str, str]) -> None:
    """'N <what> failed:' and one indented 'name: reason' line each, on stderr."""
    print(f"{len(failures)} {what}:", file=sys.stderr)
    for name, reason in failures.items():
        print(f"  {name}: {reason}", file=sys.stderr)


def exit_status(action: Callable[[], int], progress: Optional[Progress] = None, prefix: str = "",
                resume: str = "run the same command to resume") -> int:
    """Run `action` (returning its exit status) with Ctrl-C / SIGTERM caught; every refusal or
    failure becomes one line on stderr. `prefix` goes before config errors (the config file).
    The run folders the action claimed are free for other runs afterwards (`runs.lock`)."""
    try:
        with interruptible():
            return action()
    except (ConfigError, CheckpointError) as err:
        # Errors found while reading the config already name the file: name it once.
        text = str(err) if prefix and str(err).startswith(prefix) else f"{prefix}{err}"
        print(f"error: {text}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a file that cannot be written: what was written stays
        where = f"cannot write {err.filename}: {err.strerror}" if err.filename else str(err)
        print(f"error: {where}; the files written before stay, {resume}", file=sys.stderr)
        return 1
    except Interrupted as err:
        where = f" at {progress.where()}" if progress is not None else ""
        print(f"interrupted{where}; {resume}", file=sys.stderr)
        return err.exit_status
    finally:
        lock.release_all()
