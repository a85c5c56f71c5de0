"""Text outputs (CSV tables) and the rule that outputs are never replaced unless asked."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

from .errors import EvaluationError


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise if any of `paths` exists and `overwrite` is False (outputs are never replaced silently)."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise EvaluationError(f"{existing[0].absolute()} exists; pass --overwrite or choose another output")


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """CSV with a header line; floats written with full precision (repr)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
