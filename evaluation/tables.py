"""Published result tables (`published.yaml`): loading, run folders, and measured-vs-published reports.

A table may also be one this project measures with no published number (the demo table): its rows
then show the measured values, the best of each task in bold, each run's wall time, and, for every
variant of the table (e.g. `bf16: [model.precision=bf16]`, run for the rows of kind `sampler`), the
change of the first metric and the speed-up against the row's own run. Rows of kind `baseline`
name the config whose measurements the classical baseline restores (`runs.baseline`).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .errors import EvaluationError
from .evaluator import METRICS
from .files import csv_text

PUBLISHED = Path(__file__).resolve().parent / "published.yaml"
KINDS = ("sampler", "baseline")  # a row's run: a diffusion sampler (runs.restore) or a classical baseline
LOWER_IS_BETTER = {"lpips", "fid", "kid"}


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
    kind: str = "sampler"  # one of KINDS

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
    # Metrics left out, with a note, when their network weights are missing (instead of failing).
    optional_metrics: List[str] = field(default_factory=list)
    # Variant name -> `--set` overrides; each sampler row is also run with them into <folder>-<name>.
    variants: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def has_published(self) -> bool:
        return any(row.published for row in self.rows)


def _cell(raw: Any, default_verified: bool, where: str) -> Cell:
    if isinstance(raw, dict):
        if set(raw) - {"value", "verified"} or not isinstance(raw.get("value"), (int, float)):
            raise EvaluationError(f"{where}: expected a number or {{value, verified}}, got {raw!r}")
        return Cell(float(raw["value"]), bool(raw.get("verified", default_verified)))
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise EvaluationError(f"{where}: expected a number, got {raw!r}")
    return Cell(float(raw), default_verified)


def _row(raw: Dict[str, Any], table: Dict[str, Any], where: str) -> Row:
    unknown = set(raw) - {"method", "task", "config", "nfe", "crop_border", "verified", "published", "kind"}
    if unknown or not isinstance(raw.get("method"), str) or not isinstance(raw.get("task"), str):
        raise EvaluationError(f"{where}: a row needs method and task (and may have config, nfe, crop_border, "
                              f"verified, published, kind); got keys {sorted(raw)}")
    kind = raw.get("kind", "sampler")
    if kind not in KINDS:
        raise EvaluationError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "baseline" and not raw.get("config"):
        raise EvaluationError(f"{where}: a baseline row needs the config whose measurements it restores")
    verified = bool(raw.get("verified", table.get("verified", False)))
    published = raw.get("published") or {}
    for metric in published:
        if metric not in table["metrics"]:
            raise EvaluationError(f"{where}: metric {metric!r} is not a column of the table ({table['metrics']})")
    return Row(raw["method"], raw["task"], raw.get("config"), None if raw.get("nfe") is None else str(raw["nfe"]),
               int(raw.get("crop_border", 0)),
               {m: _cell(v, verified, f"{where}.{m}") for m, v in published.items()}, kind)


def _variants(raw: Any, where: str) -> Dict[str, List[str]]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, list) and v and
                                            all(isinstance(o, str) and "=" in o for o in v) for k, v in raw.items()):
        raise EvaluationError(f"{where}: expected a mapping of name -> list of key=value overrides, got {raw!r}")
    return raw


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
        unknown = set(raw) - {"title", "source", "protocol", "metrics", "rows", "verified", "optional_metrics",
                              "variants"}
        if unknown:
            raise EvaluationError(f"{where}: unknown key(s) {sorted(unknown)}")
        optional = list(raw.get("optional_metrics") or [])
        if set(optional) - set(raw["metrics"]):
            raise EvaluationError(f"{where}: optional_metrics {optional} must be columns of the table")
        rows = [_row(r, raw, f"{where}.rows[{i}]") for i, r in enumerate(raw["rows"])]
        tables[name] = Table(name, raw["title"], raw["source"], raw["protocol"], list(raw["metrics"]), rows,
                             optional, _variants(raw.get("variants") or {}, f"{where}.variants"))
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


@dataclass(frozen=True)
class Timing:
    """Wall time of a run: seconds spent in the calls that sampled images, and how many they sampled."""

    seconds: float
    images: int

    @property
    def per_image(self) -> float:
        return self.seconds / self.images


@dataclass
class Comparison:
    """Measured values (row index -> metric -> value, and image counts) against a table; optionally
    the wall time of each row's run and, per table variant, its measured values and wall times."""

    table: Table
    measured: Dict[int, Dict[str, float]]
    n_images: Dict[int, int]
    timing: Dict[int, Timing] = field(default_factory=dict)
    variants: Dict[str, Dict[int, Dict[str, float]]] = field(default_factory=dict)
    variant_timing: Dict[str, Dict[int, Timing]] = field(default_factory=dict)

    def _difference(self, i: int, metric: str) -> Optional[float]:
        cell, got = self.table.rows[i].published.get(metric), self.measured.get(i, {}).get(metric)
        return None if cell is None or got is None or not math.isfinite(got) else got - cell.value

    def variant_change(self, name: str, i: int) -> Optional[float]:
        """The variant's first metric minus the row's own (e.g. bf16 PSNR - fp32 PSNR)."""
        metric = self.table.metrics[0]
        base, got = self.measured.get(i, {}).get(metric), self.variants.get(name, {}).get(i, {}).get(metric)
        return None if base is None or got is None else got - base

    def speed_up(self, name: str, i: int) -> Optional[float]:
        """Seconds per image of the row's run over those of its variant run."""
        base, other = self.timing.get(i), self.variant_timing.get(name, {}).get(i)
        return None if base is None or other is None else base.per_image / other.per_image

    def _seconds(self, i: int) -> str:
        return f"{self.timing[i].seconds:.0f}" if i in self.timing else "-"

    def markdown(self) -> str:
        """A Markdown table: per metric, published (* = unverified), measured and measured - published;
        for a table without published numbers, the measured values (see the module docstring)."""
        t = self.table
        lines = [f"### {t.title}", "", f"Source: {t.source}", "", f"Protocol: {t.protocol}", ""]
        if not t.has_published:
            return "\n".join(lines + self._measured_lines()) + "\n"
        head = ["method", "task", "n"] + [f"{m} {k}" for m in t.metrics for k in ("pub.", "meas.", "diff")]
        timed = bool(self.timing)
        lines += ["| " + " | ".join(head + (["time s"] if timed else [])) + " |",
                  "|" + "---|" * (len(head) + timed)]
        for i, row in enumerate(t.rows):
            cells = [row.label, row.task, str(self.n_images.get(i, "-"))]
            for m in t.metrics:
                pub = row.published.get(m)
                cells += [("-" if pub is None else _fmt(pub.value) + ("" if pub.verified else "*")),
                          _fmt(self.measured.get(i, {}).get(m)), _fmt(self._difference(i, m))]
            lines.append("| " + " | ".join(cells + ([self._seconds(i)] if timed else [])) + " |")
        lines += ["", "\\* unverified: not confirmed from the paper text (see the source)."]
        return "\n".join(lines) + "\n"

    def _best(self, task: str, metric: str) -> Optional[float]:
        values = [self.measured[i][metric] for i, r in enumerate(self.table.rows)
                  if r.task == task and metric in self.measured.get(i, {})]
        if not values:
            return None
        return min(values) if metric in LOWER_IS_BETTER else max(values)

    def _measured_lines(self) -> List[str]:
        t = self.table
        first = t.metrics[0]
        head = ["task", "method", "n", *t.metrics, "time s"]
        for name in t.variants:
            head += [f"{name}: {first} change", f"{name}: speed-up"]
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
        for i, row in enumerate(t.rows):
            cells = [row.task, row.label, str(self.n_images.get(i, "-"))]
            for m in t.metrics:
                value = self.measured.get(i, {}).get(m)
                text = _fmt(value)
                cells.append(f"**{text}**" if value is not None and value == self._best(row.task, m) else text)
            cells.append(self._seconds(i))
            for name in t.variants:
                change, speed = self.variant_change(name, i), self.speed_up(name, i)
                cells += ["-" if change is None else f"{change:+.2f}", "-" if speed is None else f"{speed:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
        missing = [m for m in t.metrics if not any(m in v for v in self.measured.values())]
        notes = [f"{', '.join(missing)}: not measured (network weights not found)."] if missing else []
        return lines + ["", "Bold: the best of each task. Time: wall seconds of the run (all its calls).",
                        *notes]

    def csv(self) -> str:
        """Long format: one line per (row, variant, metric); variant empty for the row's own run."""
        header = ["table", "method", "nfe", "task", "config", "variant", "n_images", "metric", "published",
                  "verified", "measured", "difference", "seconds"]
        lines = []
        for i, row in enumerate(self.table.rows):
            runs = [("", self.measured.get(i, {}), self.timing.get(i))]
            runs += [(name, self.variants[name][i], self.variant_timing.get(name, {}).get(i))
                     for name in self.variants if i in self.variants[name]]
            for variant, values, timing in runs:
                for m in self.table.metrics:
                    pub = row.published.get(m)
                    diff = None if variant else self._difference(i, m)
                    lines.append([self.table.name, row.method, row.nfe or "", row.task, row.config or "", variant,
                                  self.n_images.get(i, ""), m, "" if pub is None else pub.value,
                                  "" if pub is None else pub.verified, values.get(m, ""),
                                  "" if diff is None else diff, "" if timing is None else timing.seconds])
        return csv_text(header, lines)
