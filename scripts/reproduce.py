"""Reproduce a published table: `python scripts/reproduce.py --table NAME [--limit N]`.

For every row of the table (`evaluation/published.yaml`) that names a run config, runs the config
as `scripts/sample.py` would (rows of kind `baseline`: as `scripts/baseline.py` would, into the
config's own output folder), resuming finished images (`--limit N` = `--set data.limit=N`, into
`<output>-nN`); every sampler row is also run with each of the table's variants (e.g. the demo
table's `bf16`: `model.precision=bf16`, into `<output>-bf16`). It records the wall time of each
run (`<run>/metrics/wall_time.json`, summed over the calls that sampled images), evaluates its
`recon/` against `label/` into `<run>/metrics/`, then prints the measured table next to the
published one with the differences and writes it as Markdown and CSV, with the comparison figure
(`evaluation.table_figures`) as PNG, to `--out`. Metrics files, tables and the figure are derived
from the images and are recomputed (and replaced, with a note) on every call. A table's optional
metrics (the demo table's LPIPS) are left out with a note when their weights are missing. Under
`torchrun` the ranks share each sampler run's images (see sample.py); rank 0 runs the baselines,
records the times (its own share) and evaluates once all have finished.
`--set` overrides apply to every config (e.g. a local checkpoint path); `--results DIR` moves the
runs to DIR/<method>/<name>; `--tasks a,b` runs and reports only those tasks' rows (written as
<table>-a+b.*): a long table can be run task by task, and a last call without it resumes every run
and reports the whole table with each run's recorded time. `--list` shows the tables with the rows
runnable in this checkout (a config whose sampler is registered and accepts its operator) and why
the others are not; a row whose sampler is not registered is left out of a run with a note.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

from configs import ConfigError, load_config, read_yaml_mapping, resolve_path  # noqa: E402
from evaluation import Comparison, EvaluationError, Networks, evaluate, get_table, load_tables  # noqa: E402
from evaluation import pair_images, parse_metrics, run_folder, write_result  # noqa: E402
from evaluation.evaluator import result_paths  # noqa: E402
from evaluation.shards import barrier, current_rank  # noqa: E402
from evaluation.table_figures import table_figure  # noqa: E402
from evaluation.tables import PUBLISHED, Row, Table, Timing  # noqa: E402
from guided_diffusion.files import atomic_write_text  # noqa: E402
from guided_diffusion.image_io import save_image  # noqa: E402
from runs import RunFolder  # noqa: E402
from runs.cli import exit_status  # noqa: E402
from runs.baseline import run as baseline_run  # noqa: E402
from runs.restore import run as sample_run  # noqa: E402
from evaluation.options import add_metric_options, build_networks  # noqa: E402
from runs.task import build_task  # noqa: E402
from samplers import build_sampler, list_samplers  # noqa: E402

FIGURE_IMAGES = 2  # image blocks in the table's comparison figure
TIMING = "wall_time.json"  # in <run>/metrics/


@dataclass(frozen=True)
class Cell:
    """One run of a table: row index, variant ("" for the row's own run), kind and config."""

    row: int
    variant: str
    kind: str
    cfg: Dict[str, Any]

    @property
    def folder(self) -> Path:
        return Path(self.cfg["output"]).absolute()


def row_config(config: str, overrides: List[str], limit: Optional[int], results: Optional[Path]) -> Dict[str, Any]:
    """A row's config with the user's overrides, `data.limit` and the run folder applied."""
    if any(o.split("=", 1)[0].strip() == "output" for o in overrides):
        raise ConfigError("--set output=... would send every row to one folder; use --results DIR")
    extra = [f"data.limit={limit}"] if limit else []
    cfg = load_config(str(resolve_path(config)), [*overrides, *extra])
    cfg["output"] = str(run_folder(cfg["output"], limit, results))
    return cfg


def unregistered_sampler(row: Row) -> Optional[str]:
    """'sampler NAME is not registered' for a sampler row whose config names a sampler this checkout
    lacks (read before validating the config, which would refuse the name); else None."""
    if row.kind != "sampler":
        return None
    name = (read_yaml_mapping(str(resolve_path(row.config))).get("sampler") or {}).get("name")
    return None if name in list_samplers() else f"sampler {name!r} is not registered"


def row_problem(row: Row) -> Optional[str]:
    """Why a table row cannot run in this checkout (None when it can): no config, a sampler that is
    not registered, or a sampler that refuses the config's operator (`Sampler.check_task`)."""
    if not row.config:
        return "no config (published only)"
    missing = unregistered_sampler(row)
    if missing:
        return missing
    cfg = load_config(str(resolve_path(row.config)))
    if row.kind == "sampler":
        op, _ = build_task(cfg)
        try:
            build_sampler(**cfg["sampler"]).check_task(op)
        except ValueError as err:
            return str(err).splitlines()[0]
    return None


def plan(table: Table, overrides: List[str], limit: Optional[int], results: Optional[Path]) -> List[Cell]:
    """Every run of the table: each row with a config, then each sampler row's variants. A row
    whose sampler is not registered in this checkout is left out with a note."""
    cells = []
    for i, row in enumerate(table.rows):
        if not row.config:
            continue
        missing = unregistered_sampler(row)
        if missing:
            print(f"[{row.label} / {row.task}] not run: {missing}")
            continue
        cfg = row_config(row.config, overrides, limit, results)
        cells.append(Cell(i, "", row.kind, cfg))
        if row.kind == "sampler":
            for name, extra in table.variants.items():
                variant = row_config(row.config, [*overrides, *extra], limit, results)
                variant["output"] = f"{cfg['output']}-{name}"
                cells.append(Cell(i, name, row.kind, variant))
    return cells


def select_tasks(table: Table, tasks: Optional[str]) -> Table:
    """The table restricted to the rows of the comma-separated `tasks` (all rows for None)."""
    if not tasks:
        return table
    wanted = [t.strip() for t in tasks.split(",") if t.strip()]
    known = list(dict.fromkeys(r.task for r in table.rows))
    unknown = [t for t in wanted if t not in known]
    if unknown or not wanted:
        raise EvaluationError(f"--tasks: unknown task(s) {unknown} of table {table.name!r}; known: {', '.join(known)}")
    return dataclasses.replace(table, rows=[r for r in table.rows if r.task in wanted])


def metrics_run(folder: Path) -> RunFolder:
    """<run>/metrics claimed as an evaluate run (scores and wall times of the run's images), so an
    --overwrite of the run removes them with its images."""
    return RunFolder.claim(folder / "metrics", "evaluate", [folder / "recon", folder / "label"])


def read_timing(folder: Path) -> Optional[Timing]:
    path = folder / "metrics" / TIMING
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Timing(float(data["seconds"]), int(data["images"]))


def add_timing(folder: Path, seconds: float, images: int) -> None:
    """Add a call's wall time and sampled images to the run's record (nothing when it sampled none)."""
    if images:
        old = read_timing(folder) or Timing(0.0, 0)
        atomic_write_text(metrics_run(folder).path(TIMING),
                          json.dumps({"seconds": old.seconds + seconds, "images": old.images + images}) + "\n")


def run_cell(cell: Cell, overwrite: bool, rank: int) -> None:
    """Run (or resume) one cell and add its wall time to the record (rank 0)."""
    start = time.perf_counter()  # --overwrite: the run's earlier metrics/ go with its images
    if cell.kind == "baseline":
        report = baseline_run(cell.cfg, output=str(cell.folder), overwrite=overwrite)
    else:
        report = sample_run(cell.cfg, overwrite=overwrite)
    print(f"wrote {len(report.written)} image(s)" + (f"; failed: {report.failed}" if report.failed else ""))
    if rank == 0:
        add_timing(cell.folder, time.perf_counter() - start, len(report.written))


def run_cells(table: Table, cells: List[Cell], overwrite: bool, rank: int) -> None:
    """Sample every cell (baselines on rank 0 only: they are not sharded)."""
    for cell in cells:  # all configs were validated by plan(), before hours of sampling
        row = table.rows[cell.row]
        if cell.kind == "baseline" and rank != 0:
            continue
        name = f"{row.label} / {row.task}" + (f" / {cell.variant}" if cell.variant else "")
        print(f"[{name}] {row.config} -> {cell.folder}")
        run_cell(cell, overwrite, rank)


def measure(table: Table, cells: List[Cell], metrics: List[str], networks: Networks,
            batch_size: int) -> Comparison:
    """Evaluate each run folder into <run>/metrics/ (replacing earlier metrics, with a note)."""
    comparison = Comparison(table, {}, {})
    for cell in cells:
        pairs = pair_images(cell.folder / "recon", cell.folder / "label")
        result = evaluate(pairs, metrics, networks, table.rows[cell.row].crop_border, batch_size)
        if any(p.exists() for p in result_paths(cell.folder / "metrics")):
            print(f"replacing the metrics in {cell.folder / 'metrics'}")
        metrics_run(cell.folder).record(p.name for p in result_paths(cell.folder / "metrics"))
        write_result(result, cell.folder / "metrics", overwrite=True)
        timing = read_timing(cell.folder)
        if cell.variant:
            comparison.variants.setdefault(cell.variant, {})[cell.row] = result.summary
            if timing:
                comparison.variant_timing.setdefault(cell.variant, {})[cell.row] = timing
        else:
            comparison.measured[cell.row], comparison.n_images[cell.row] = result.summary, len(pairs)
            if timing:
                comparison.timing[cell.row] = timing
    return comparison


def metric_networks(args: argparse.Namespace, table: Table, metrics: List[str]) -> Tuple[List[str], Networks]:
    """The metrics to compute and their networks: a table's optional metric whose weights are missing
    is left out with a note, unless --metrics asked for it."""
    try:
        return metrics, build_networks(args, metrics)
    except EvaluationError as err:
        optional = [] if args.metrics else [m for m in metrics if m in table.optional_metrics]
        if not optional:
            raise
        print(f"leaving out {', '.join(optional)}: {err}")
        kept = [m for m in metrics if m not in optional]
        return kept, build_networks(args, kept)


def write_outputs(stem: Path, comparison: Comparison, figure_args: Tuple[Optional[int], Optional[Path]]) -> List[Path]:
    """<stem>.md, .csv and .png (the comparison figure), replacing earlier ones with a note."""
    tables = RunFolder.claim(stem.parent, "tables")  # a folder of the user's files is refused
    paths = [tables.path(stem.with_suffix(s).name) for s in (".md", ".csv", ".png")]
    for path in paths:
        if path.exists():
            print(f"replacing {path}")
    atomic_write_text(paths[0], comparison.markdown())
    atomic_write_text(paths[1], comparison.csv())
    figure, _, _ = table_figure(comparison.table, *figure_args, FIGURE_IMAGES)
    save_image(figure, paths[2])
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="table name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    parser.add_argument("--limit", type=int, help="use only the first N images of each test set")
    parser.add_argument("--published", default=str(PUBLISHED), help="published-numbers YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in every config of the table (repeatable)")
    parser.add_argument("--results", type=Path, help="write the runs to DIR/<method>/<name> instead")
    parser.add_argument("--out", type=Path, default=Path("results/tables"), help="folder for <table>.md/.csv/.png")
    parser.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    parser.add_argument("--tasks", help="comma-separated tasks: run and report only their rows")
    add_metric_options(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def action() -> int:
        try:
            tables = load_tables(Path(args.published))
            if args.list:
                for name, t in tables.items():
                    problems = [(r, row_problem(r)) for r in t.rows]
                    runnable = sum(1 for _, p in problems if p is None)
                    print(f"{name}: {t.title} ({runnable} runnable of {len(t.rows)} rows)")
                    for r, problem in problems:
                        if problem is not None and r.config:
                            print(f"  not runnable: {r.label} / {r.task}: {problem}")
                return 0
            if not args.table:
                raise EvaluationError("--table NAME is required (see --list)")
            if args.limit is not None and args.limit < 1:
                raise EvaluationError(f"--limit must be >= 1, got {args.limit}")
            table = select_tasks(get_table(tables, args.table), args.tasks)
            metrics = parse_metrics(args.metrics or ",".join(table.metrics))
            try:
                rank = current_rank()
            except ValueError as err:
                raise ConfigError(str(err)) from None
            # Rank 0 finds the metric weights before sampling, so a missing file fails in seconds.
            metrics, networks = metric_networks(args, table, metrics) if rank.rank == 0 else (metrics, None)
            cells = plan(table, args.overrides, args.limit, args.results)
            run_cells(table, cells, args.overwrite, rank.rank)
            barrier(rank)
            if rank.rank != 0:
                return 0
            comparison = measure(table, cells, metrics, networks, args.batch_size)
            name = table.name + (f"-n{args.limit}" if args.limit else "") + ("-" + "+".join(
                dict.fromkeys(r.task for r in table.rows)) if args.tasks else "")
            stem = args.out / name
            paths = write_outputs(stem, comparison, (args.limit, args.results))
        except EvaluationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(comparison.markdown())
        print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f} s")
        return 0

    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main())
