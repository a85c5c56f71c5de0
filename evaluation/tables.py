"""Published result tables (`published.yaml`): loading, run folders, and measured-vs-published reports."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .errors import EvaluationError
from .evaluator import METRICS
from .files import csv_text

PUBLISHED = Path(__file__).resolve().parent / "published.yaml"


@dataclass(frozen=True)
class Cell:
    """One published number; `verified` is False where the reference notes mark it UNVERIFIED."""

    value: float
    verified: bool


@dataclass(frozen=True)
class Row:
    method: str
    task: str
    config: Optional[str]  # the run config reproducing this row; None: published only
    nfe: Optional[str]
    crop_border: int  # pixels ignored on each side by PSNR / SSIM (the paper's protocol)
    published: Dict[str, Cell]

    @property
    def label(self) -> str:
        return f"{self.method} ({self.nfe})" if self.nfe else self.method


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    source: str
    protocol: str
    metrics: List[str]
    rows: List[Row]


def _cell(raw: Any, default_verified: bool, where: str) -> Cell:
    if isinstance(raw, dict):
        if set(raw) - {"value", "verified"} or not isinstance(raw.get("value"), (int, float)):
            raise EvaluationError(f"{where}: expected a number or {{value, verified}}, got {raw!r}")
        return Cell(float(raw["value"]), bool(raw.get("verified", default_verified)))
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise EvaluationError(f"{where}: expected a number, got {raw!r}")
    return Cell(float(raw), default_verified)


def _row(raw: Dict[str, Any], table: Dict[str, Any], where: str) -> Row:
    unknown = set(raw) - {"method", "task", "config", "nfe", "crop_border", "verified", "published"}
    if unknown or not isinstance(raw.get("method"), str) or not isinstance(raw.get("task"), str):
        raise EvaluationError(f"{where}: a row needs method and task (and may have config, nfe, crop_border, "
                              f"verified, published); got keys {sorted(raw)}")
    verified = bool(raw.get("verified", table.get("verified", False)))
    published = raw.get("published") or {}
    for metric in published:
        if metric not in table["metrics"]:
            raise EvaluationError(f"{where}: metric {metric!r} is not a column of the table ({table['metrics']})")
    return Row(raw["method"], raw["task"], raw.get("config"), None if raw.get("nfe") is None else str(raw["nfe"]),
               int(raw.get("crop_border", 0)),
               {m: _cell(v, verified, f"{where}.{m}") for m, v in published.items()})


def load_tables(path: Path = PUBLISHED) -> Dict[str, Table]:
    """Every table of a published-numbers file, validated (one-line errors naming file and key)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"published-numbers file not found: {path.absolute()}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise EvaluationError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise EvaluationError(f"{path}: expected a top-level 'tables' mapping")
    tables: Dict[str, Table] = {}
    for name, raw in data["tables"].items():
        where = f"{path.name}: tables.{name}"
        missing = [k for k in ("title", "source", "protocol", "metrics", "rows") if k not in raw]
        if missing:
            raise EvaluationError(f"{where}: missing {', '.join(missing)}")
        bad = [m for m in raw["metrics"] if m not in METRICS]
        if bad:
            raise EvaluationError(f"{where}: unknown metric(s) {bad}; known: {', '.join(METRICS)}")
        rows = [_row(r, raw, f"{where}.rows[{i}]") for i, r in enumerate(raw["rows"])]
        tables[name] = Table(name, raw["title"], raw["source"], raw["protocol"], list(raw["metrics"]), rows)
    return tables


def get_table(tables: Dict[str, Table], name: str) -> Table:
    if name not in tables:
        close = difflib.get_close_matches(name, list(tables), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise EvaluationError(f"unknown table {name!r}{hint}; known: {', '.join(tables)}")
    return tables[name]


def run_folder(output: str, limit: Optional[int] = None, results: Optional[Path] = None) -> Path:
    """Where a row's run lives: the config's `output` (or `<results>/<method folder>/<name>` when
    `results` is given), with `-n<limit>` appended for a limited run (sample.py refuses to mix a
    limited and a full run in one folder)."""
    folder = Path(output)
    if results is not None:
        folder = Path(results) / folder.parent.name / folder.name
    return folder.with_name(f"{folder.name}-n{limit}") if limit else folder


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"


@dataclass
class Comparison:
    """Measured values (row index -> metric -> value, and image counts) against a table."""

    table: Table
    measured: Dict[int, Dict[str, float]]
    n_images: Dict[int, int]

    def _difference(self, i: int, metric: str) -> Optional[float]:
        cell, got = self.table.rows[i].published.get(metric), self.measured.get(i, {}).get(metric)
        return None if cell is None or got is None or not math.isfinite(got) else got - cell.value

    def markdown(self) -> str:
        """A Markdown table: per metric, published (* = unverified), measured and measured - published."""
        t = self.table
        head = ["method", "task", "n"] + [f"{m} {k}" for m in t.metrics for k in ("pub.", "meas.", "diff")]
        lines = [f"### {t.title}", "", f"Source: {t.source}", "", f"Protocol: {t.protocol}", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, row in enumerate(t.rows):
            cells = [row.label, row.task, str(self.n_images.get(i, "-"))]
            for m in t.metrics:
                pub = row.published.get(m)
                cells += [("-" if pub is None else _fmt(pub.value) + ("" if pub.verified else "*")),
                          _fmt(self.measured.get(i, {}).get(m)), _fmt(self._difference(i, m))]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "\\* unverified: not confirmed from the paper text (see the source)."]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Long format: one line per (row, metric)."""
        header = ["table", "method", "nfe", "task", "config", "n_images", "metric", "published", "verified",
                  "measured", "difference"]
        lines = []
        for i, row in enumerate(self.table.rows):
            for m in self.table.metrics:
                pub = row.published.get(m)
                lines.append([self.table.name, row.method, row.nfe or "", row.task, row.config or "",
                              self.n_images.get(i, ""), m, "" if pub is None else pub.value,
                              "" if pub is None else pub.verified, self.measured.get(i, {}).get(m, ""),
                              "" if self._difference(i, m) is None else self._difference(i, m)])
        return csv_text(header, lines)
