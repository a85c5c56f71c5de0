"""Run folders: a script writes only into a folder that is empty or that it marked as its own run.

A claimed folder holds a hidden `.dfrestore/` with `run.json` (the marker: which tool and which kind
of run: sample, baseline, degrade, evaluate, train, tables), `files.txt` (every file the run wrote, relative
to the folder, recorded *before* the file is created, so a kill cannot leave an unrecorded file) and
`state/` (mid-trajectory sampling states). The rules:

- a folder that is neither empty nor marked is refused, and nothing in it is touched;
- a folder marked by another kind of run is refused (a degrade folder is not a sample folder);
- an output inside an input folder, or an input inside the output, is refused;
- `--overwrite` removes the earlier run's recorded files, the runs of this tool nested in the
  folder (evaluate.py's `<run>/metrics`) and the folders that leaves empty, and nothing else, so a
  folder never mixes two runs;
- temporary files left by a killed run (`guided_diffusion.files.is_temporary` names) are removed
  only inside a marked folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Set, Union

from configs import ConfigError
from guided_diffusion.files import atomic_write_text, is_temporary

PathLike = Union[str, os.PathLike]
TOOL = "diffusion-restoration-bench"
HIDDEN = ".dfrestore"
KINDS = ("sample", "baseline", "degrade", "evaluate", "train", "tables")


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
    of the same run between creating it and renaming the marker into it): not a user's file."""
    if is_temporary(entry):
        return True
    return entry.name == HIDDEN and entry.is_dir() and all(is_temporary(p) for p in entry.iterdir())


class RunFolder:
    """A claimed output folder (see the module docstring). Create with `RunFolder.claim`."""

    def __init__(self, root: Path, kind: str):
        self.root, self.kind = root, kind
        self.hidden = root / HIDDEN
        self.state_dir = self.hidden / "state"
        self._manifest = self.hidden / "files.txt"
        self._recorded: Set[str] = set(self._read_manifest())

    @classmethod
    def claim(cls, root: PathLike, kind: str, inputs: Sequence[PathLike] = (), overwrite: bool = False,
              clean_temporary: bool = True) -> "RunFolder":
        """Make `root` this run's folder, or raise RunFolderError naming why it may not be used.

        inputs: files or folders the run reads (never inside the output, nor it inside them);
        overwrite: first remove the earlier run's own files; clean_temporary: remove temporary files
        a killed run left (False while other processes of the same run may be writing).
        """
        root = cls.check(root, kind, inputs)
        marked = cls.marker_kind(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            if marked is None:
                atomic_write_text(root / HIDDEN / "run.json", json.dumps({"tool": TOOL, "kind": kind}) + "\n")
        except OSError as err:
            raise RunFolderError(f"cannot write to the output folder {root}: {err.strerror or err}") from None
        run = cls(root, kind)
        if clean_temporary:
            run.remove_temporary()
        if overwrite:
            run.remove_outputs()
        return run

    @classmethod
    def check(cls, root: PathLike, kind: str, inputs: Sequence[PathLike] = ()) -> Path:
        """Raise RunFolderError if `claim` would refuse `root` (changes nothing); returns it absolute."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        root = Path(root).absolute()
        if root.exists() and not root.is_dir():
            raise RunFolderError(f"the output {root} is a file, not a folder")
        refuse_overlap(root, inputs)
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
        # created): keep the names that are whole and inside the folder.
        lines = text.split("\n")[:-1]
        return [line for line in lines if line and ".." not in Path(line).parts and not Path(line).is_absolute()]

    def path(self, relative: PathLike) -> Path:
        """The absolute path of a file this run is about to write, recorded in the manifest first."""
        rel = Path(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{relative}: a run writes only inside its folder")
        self.record([rel.as_posix()])
        return self.root / rel

    def record(self, relatives: Iterable[str]) -> None:
        """Append names to the manifest (one write, O_APPEND: concurrent ranks cannot interleave)."""
        new = [r for r in relatives if r not in self._recorded]
        if not new:
            return
        self.hidden.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
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
        that leaves empty, and the saved sampling states; the marker stays. Returns the number of
        files removed."""
        removed = sum(self._remove_nested_run(marker.parent.parent)
                      for marker in sorted(self.root.glob(f"*/**/{HIDDEN}/run.json")))
        removed += self._remove_recorded()
        for state in self.state_dir.glob("*.pt") if self.state_dir.is_dir() else ():
            state.unlink()
        self._manifest.unlink(missing_ok=True)
        self._recorded.clear()
        return removed

    def _remove_nested_run(self, folder: Path) -> int:
        kind = self.marker_kind(folder)
        if kind is None or not _inside(folder.resolve(), self.root.resolve()):
            return 0
        nested = RunFolder(folder, kind)
        removed = nested.remove_outputs()
        (nested.hidden / "run.json").unlink()
        for empty in (nested.state_dir, nested.hidden, folder):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
        return removed

    def _remove_recorded(self) -> int:
        removed, parents, real_root = 0, set(), self.root.resolve()
        for rel in sorted(self._recorded):
            p = self.root / rel
            if not _inside(p.parent.resolve(), real_root):  # a folder replaced by a link to elsewhere
                continue
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed += 1
            parents.update(q for q in p.parents if _inside(q, self.root) and q != self.root)
        for folder in sorted(parents, key=lambda q: len(q.parts), reverse=True):
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()
        return removed

    def remove_temporary(self) -> None:
        """Remove temporary files a killed run of this tool left in the folder (names no user file has)."""
        for p in self.root.rglob("*"):
            if p.is_file() and is_temporary(p):
                p.unlink()
