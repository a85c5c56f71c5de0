"""Pair restored images with their ground truths by file stem."""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple

from guided_diffusion.image_io import images_by_stem

from .errors import EvaluationError


class Pair(NamedTuple):
    stem: str
    recon: Path
    label: Path


def _by_stem(folder: Path, role: str) -> dict:
    if not folder.is_dir():
        raise EvaluationError(f"{role} folder {folder.absolute()} does not exist")
    try:
        return images_by_stem(folder)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(f"{role} folder: {err}") from None


def pair_images(recon_dir: Path, label_dir: Path) -> List[Pair]:
    """Every recon image with the label image of the same stem, sorted by stem. Unmatched files on
    either side are an error (a partial run is evaluated by pointing at matching folders)."""
    recon, label = _by_stem(Path(recon_dir), "recon"), _by_stem(Path(label_dir), "label")
    for a, b, role in ((recon, label, "label"), (label, recon, "recon")):
        missing = sorted(set(a) - set(b))
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise EvaluationError(f"{len(missing)} image(s) have no {role} of the same stem: {shown}")
    return [Pair(s, recon[s], label[s]) for s in sorted(recon)]
