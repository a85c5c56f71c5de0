"""Run folders: a script writes only into a folder that is empty or that it marked as its own run.

A claimed folder holds a hidden `.dfrestore/` with `run.json` (the marker: which tool and which kind
of run: sample, baseline, degrade, evaluate, train, tables), `files.txt` (every file the run wrote, relative
to the folder, recorded *before* the file is created, so a kill cannot leave an unrecorded file) and
`state/` (mid-trajectory sampling states) and `lock` (`runs.lock`: one run per folder at a time).
The rules:

- a folder that is neither empty nor marked is refused, and nothing in it is touched;
- a folder marked by another kind of run is refused (a degrade folder is not a sample folder);
- a folder another run is using is refused, naming that run (pid, host, start, command); the
  lock a killed run left is taken over;
- a symbolic link where the tool's own subfolders or `.dfrestore` belong is refused, and no file
  is ever written or deleted through a link inside the folder (the folder itself may be a link);
- an output inside an input folder, or an input inside the output, is refused;
- `--overwrite` removes the earlier run's recorded files, the runs of this tool nested in the
  folder (evaluate.py's `<run>/metrics`) and the folders that leaves empty, and nothing else, so a
  folder never mixes two runs; besides recorded names it deletes only names of its own patterns
  (sampling states `images-*.pt`, temporary files);
- temporary files left by a killed run (`guided_diffusion.files.is_temporary` names) are removed
  only inside a marked folder.

Under torchrun rank 0 claims the folder (and holds its lock); the other ranks join it (`join=True`).
"""
from __future__ import annotations

import fnmatch
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Set, Union

from configs import ConfigError
from guided_diffusion.files import atomic_write_text, is_temporary

from . import lock

PathLike = Union[str, os.PathLike]
TOOL = "diffusion-restoration-bench"
HIDDEN = ".dfrestore"
KINDS = ("sample", "baseline", "degrade", "evaluate", "train", "tables")
# Where the tools write inside a run folder other than by replacing a whole file (the folders, the
# files appended to, the lock): a link in any of these places is refused.
OWN_PLACES = (HIDDEN, f"{HIDDEN}/state", f"{HIDDEN}/files.txt", f"{HIDDEN}/run.json", f"{HIDDEN}/{lock.LOCK}",
              "samples", "recon", "label", "input", "baseline", "progress", "metrics", "measurement", "log.jsonl")
STATE_PATTERN = "images-*.pt"  # the sampling states in .dfrestore/state (runs.resume)


class RunFolderError(ConfigError):
    """A folder the run may not use (one line naming it); raised before any work."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_overlap(out: Path, inputs: Iterable[PathLike]) -> None:
    """Refuse an output folder inside an input folder, or an input inside the output folder."""
    out = out.resolve()
    for source in inputs:
        src = Path(source).resolve()
        if _inside(src, out):
            raise RunFolderError(f"the input {src} lies inside the output folder {out}; choose an output "
                                 f"folder outside the inputs")
        if src.is_dir() and _inside(out, src):
            raise RunFolderError(f"the output folder {out} lies inside the input folder {src}; choose an "
                                 f"output folder outside the inputs")


def _being_marked(entry: Path) -> bool:
    """A temporary file of this tool, or the hidden folder of a claim in progress (another process
    of the same run between creating it and renaming the marker into it, or a claim that was
    killed there): not a user's file."""
    if is_temporary(entry):
        return True
    return (entry.name == HIDDEN and entry.is_dir() and not entry.is_symlink()
            and all(is_temporary(p) or p.name == lock.LOCK for p in entry.iterdir()))


def _link_error(link: Path) -> "RunFolderError":
    return RunFolderError(f"{link} is a symbolic link (to {os.readlink(link)}); a run writes only real files "
                          f"inside its folder: remove the link or choose another output (nothing was touched)")


def _walk(root: Path) -> Iterator[Path]:
    """The real folders under root, root first, never entering a link."""
    for top, _, _ in os.walk(root):  # os.walk does not follow links to folders
        yield Path(top)


class RunFolder:
    """A claimed output folder (see the module docstring). Create with `RunFolder.claim`."""

    def __init__(self, root: Path, kind: str):
        self.root, self.kind = root, kind
        self.hidden = root / HIDDEN
        self.state_dir = self.hidden / "state"
        self._manifest = self.hidden / "files.txt"
        self._recorded: Set[str] = set(self._read_manifest())
        self._locked = False

    @classmethod
    def claim(cls, root: PathLike, kind: str, inputs: Sequence[PathLike] = (), overwrite: bool = False,
              clean_temporary: bool = True, join: bool = False) -> "RunFolder":
        """Make `root` this run's folder, or raise RunFolderError naming why it may not be used.

        inputs: files or folders the run reads (never inside the output, nor it inside them);
        overwrite: first remove the earlier run's own files; clean_temporary: remove temporary files
        a killed run left (False while other processes of the same run may be writing); join: a
        torchrun rank other than 0 joining the folder rank 0 claimed (and holds the lock of).
        The lock is held until `release()` (or `lock.release_all()`, or the process ends).
        """
        root = cls.check(root, kind, inputs, join)
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / HIDDEN).mkdir(exist_ok=True)
            locked = join or lock.acquire(root / HIDDEN)
        except lock.FolderInUse as err:
            raise cls._in_use(root, err.holder) from None
        except OSError as err:
            raise RunFolderError(f"cannot write to the output folder {root}: {err.strerror or err}") from None
        if not locked:
            print(f"warning: {root} is on a file system without locks; make sure no other run uses it",
                  file=sys.stderr)
        holds = locked and not join
        try:
            cls.check(root, kind, inputs, join=True)  # again, under the lock: a run may have ended meanwhile
            if cls.marker_kind(root) is None:
                try:
                    atomic_write_text(root / HIDDEN / "run.json", json.dumps({"tool": TOOL, "kind": kind}) + "\n")
                except OSError as err:
                    raise RunFolderError(f"cannot write to the output folder {root}: {err.strerror or err}") from None
            run = cls(root, kind)
            run._locked = holds
            if clean_temporary:
                run.remove_temporary()
            if overwrite:
                run.remove_outputs()
        except BaseException:
            if holds:
                lock.release(root / HIDDEN)
            raise
        return run

    def release(self) -> None:
        """Let other runs use the folder (the claim's lock; a no-op for a joining rank)."""
        if self._locked:
            lock.release(self.hidden)
            self._locked = False

    @staticmethod
    def _in_use(root: Path, holder: str) -> "RunFolderError":
        return RunFolderError(f"the output folder {root} is in use by another run ({holder}); wait for it to "
                              f"end or choose another output (nothing was touched)")

    @classmethod
    def check(cls, root: PathLike, kind: str, inputs: Sequence[PathLike] = (), join: bool = False) -> Path:
        """Raise RunFolderError if `claim` would refuse `root` (changes nothing); returns it absolute.
        join: a torchrun rank other than 0 (the folder's lock is its rank 0's)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        root = Path(root).absolute()
        if root.exists() and not root.is_dir():
            raise RunFolderError(f"the output {root} is a file, not a folder")
        refuse_overlap(root, inputs)
        for place in OWN_PLACES:
            if (root / place).is_symlink():
                raise _link_error(root / place)
        holder = None if join else lock.holder(root / HIDDEN)
        if holder is not None:
            raise cls._in_use(root, holder)
        marked = cls.marker_kind(root)
        if marked is None and root.is_dir() and any(not _being_marked(p) for p in root.iterdir()):
            raise RunFolderError(f"the output folder {root} is not empty and holds no run of this tool; "
                                 f"choose a new or empty folder (nothing in it was touched)")
        if marked is not None and marked != kind:
            raise RunFolderError(f"the output folder {root} holds a {marked} run, not a {kind} run; "
                                 f"choose another folder")
        return root

    @staticmethod
    def marker_kind(root: Path) -> Optional[str]:
        """The kind of run `root` was marked with, or None when it holds no marker of this tool."""
        try:
            marker = json.loads((root / HIDDEN / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(marker, dict) or marker.get("tool") != TOOL:
            return None
        return str(marker.get("kind"))

    def _read_manifest(self) -> List[str]:
        try:
            text = self._manifest.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
        # A kill can tear only the last line, the one without its newline (its file was never
        # created): keep the names that are whole, inside the folder and outside .dfrestore.
        lines = text.split("\n")[:-1]
        return [line for line in lines if line and ".." not in Path(line).parts and not Path(line).is_absolute()
                and Path(line).parts[0] != HIDDEN]

    def _linked_folder(self, rel: Path) -> Optional[Path]:
        """The first folder on the way from the root to `rel` that is a symbolic link, if any."""
        for parent in reversed(rel.parents[:-1]):
            if (self.root / parent).is_symlink():
                return self.root / parent
        return None

    def path(self, relative: PathLike) -> Path:
        """The absolute path of a file this run is about to write, recorded in the manifest first.
        A folder on the way that is a symbolic link is refused (RunFolderError)."""
        rel = Path(relative)
        if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] == (HIDDEN,):
            raise ValueError(f"{relative}: a run writes only inside its folder")
        link = self._linked_folder(rel)
        if link is not None:
            raise _link_error(link)
        self.record([rel.as_posix()])
        return self.root / rel

    def record(self, relatives: Iterable[str]) -> None:
        """Append names to the manifest (one write, O_APPEND: concurrent ranks cannot interleave)."""
        new = [r for r in relatives if r not in self._recorded]
        if not new:
            return
        self.hidden.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            os.write(fd, "".join(r + "\n" for r in new).encode("utf-8"))
        finally:
            os.close(fd)
        self._recorded.update(new)

    def outputs(self) -> List[Path]:
        """The recorded files that exist, sorted."""
        return sorted(p for p in (self.root / r for r in self._recorded) if p.is_file())

    def remove_outputs(self) -> int:
        """Delete every file the earlier run recorded, the runs of this tool nested in the folder
        (the scores `evaluate.py` wrote to `<run>/metrics` describe the earlier images), the folders
        that leaves empty, and the saved sampling states; the marker stays. Nothing behind a link
        is touched. Returns the number of files removed."""
        nested = [f for f in _walk(self.root) if f != self.root and f.name != HIDDEN
                  and not (f / HIDDEN).is_symlink() and self.marker_kind(f) is not None]
        for folder in nested:  # refused before anything is removed
            holder = lock.holder(folder / HIDDEN)
            if holder is not None:
                raise self._in_use(folder, holder)
        removed = sum(self._remove_nested_run(folder) for folder in nested)
        removed += self._remove_recorded()
        self.remove_states()
        self._manifest.unlink(missing_ok=True)
        self._recorded.clear()
        return removed

    def state_files(self) -> List[Path]:
        """The saved sampling states (names of STATE_PATTERN) in .dfrestore/state, never behind a link."""
        if self.hidden.is_symlink() or self.state_dir.is_symlink() or not self.state_dir.is_dir():
            return []
        return sorted(p for p in self.state_dir.iterdir() if fnmatch.fnmatchcase(p.name, STATE_PATTERN))

    def remove_states(self) -> int:
        """Delete the saved sampling states; returns how many there were."""
        gone = self.state_files()
        for p in gone:
            p.unlink()
        return len(gone)

    def _remove_nested_run(self, folder: Path) -> int:
        kind = self.marker_kind(folder)
        if kind is None:  # inside a nested run removed before
            return 0
        nested = RunFolder(folder, kind)
        removed = nested.remove_outputs()
        for own in ("run.json", lock.LOCK):
            (nested.hidden / own).unlink(missing_ok=True)
        for empty in (nested.state_dir, nested.hidden, folder):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
        return removed

    def _remove_recorded(self) -> int:
        removed, parents = 0, set()
        for rel in sorted(self._recorded):
            p = self.root / rel
            if self._linked_folder(Path(rel)) is not None:  # a folder replaced by a link: not the run's
                continue
            if p.is_file() or p.is_symlink():  # a link is removed, never what it points to
                p.unlink()
                removed += 1
            parents.update(q for q in p.parents if _inside(q, self.root) and q != self.root)
        for folder in sorted(parents, key=lambda q: len(q.parts), reverse=True):
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()
        return removed

    def remove_temporary(self) -> None:
        """Remove temporary files a killed run of this tool left in the folder (names no user file
        has), never behind a link."""
        for folder in _walk(self.root):
            for p in folder.iterdir():
                if is_temporary(p) and (p.is_symlink() or p.is_file()):
                    p.unlink()
