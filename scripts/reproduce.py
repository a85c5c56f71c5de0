"""Reproduce a published table: `python scripts/reproduce.py --table NAME [--limit N]`.

For every row of the table (`evaluation/published.yaml`) that names a run config, runs the config
as `scripts/sample.py` would (resuming finished images; `--limit N` = `--set data.limit=N`, into
`<output>-nN`), evaluates its `recon/` against `label/` into `<run>/metrics/`, then prints the
measured table next to the published one with the differences and writes it as Markdown and CSV
to `--out`. Metrics files and tables are derived from the images and are recomputed (and
replaced, with a note) on every call. Under `torchrun` the ranks share each run's images (see
sample.py); rank 0 evaluates once all have finished.
`--set` overrides apply to every config (e.g. a local checkpoint path); `--results DIR` moves the
runs to DIR/<method>/<name>. `--list` shows the tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import ConfigError, load_config  # noqa: E402
from evaluation import Comparison, EvaluationError, Networks, evaluate, get_table, load_tables  # noqa: E402
from evaluation import pair_images, parse_metrics, run_folder, write_result  # noqa: E402
from evaluation.evaluator import result_paths  # noqa: E402
from guided_diffusion.files import atomic_write_text  # noqa: E402
from evaluation.shards import barrier, current_rank  # noqa: E402
from evaluation.tables import PUBLISHED, Table  # noqa: E402
from guided_diffusion import CheckpointError  # noqa: E402
from scripts.evaluate import add_metric_options, build_networks  # noqa: E402
from configs import resolve_path  # noqa: E402
from scripts.sample import run as sample_run  # noqa: E402


def row_config(config: str, overrides: List[str], limit: Optional[int], results: Optional[Path]) -> Dict[str, Any]:
    """A row's config with the user's overrides, `data.limit` and the run folder applied."""
    if any(o.split("=", 1)[0].strip() == "output" for o in overrides):
        raise ConfigError("--set output=... would send every row to one folder; use --results DIR")
    extra = [f"data.limit={limit}"] if limit else []
    cfg = load_config(str(resolve_path(config)), [*overrides, *extra])
    cfg["output"] = str(run_folder(cfg["output"], limit, results))
    return cfg


def run_rows(table: Table, overrides: List[str], limit: Optional[int], results: Optional[Path],
             overwrite: bool) -> Dict[int, Path]:
    """Sample every row that has a config; returns row index -> run folder."""
    folders: Dict[int, Path] = {}
    configs = {i: row_config(r.config, overrides, limit, results) for i, r in enumerate(table.rows) if r.config}
    for i, cfg in configs.items():  # all configs are validated above, before hours of sampling
        print(f"[{table.rows[i].label} / {table.rows[i].task}] {table.rows[i].config} -> {cfg['output']}")
        report = sample_run(cfg, overwrite=overwrite)
        print(f"wrote {len(report.written)} image(s)" + (f"; failed: {report.failed}" if report.failed else ""))
        folders[i] = Path(cfg["output"]).absolute()
    return folders


def measure(table: Table, folders: Dict[int, Path], metrics: List[str], networks: Networks,
            batch_size: int) -> Comparison:
    """Evaluate each run folder into <run>/metrics/ (replacing earlier metrics, with a note)."""
    measured, counts = {}, {}
    for i, folder in folders.items():
        pairs = pair_images(folder / "recon", folder / "label")
        result = evaluate(pairs, metrics, networks, table.rows[i].crop_border, batch_size)
        if any(p.exists() for p in result_paths(folder / "metrics")):
            print(f"replacing the metrics in {folder / 'metrics'}")
        write_result(result, folder / "metrics", overwrite=True)
        measured[i], counts[i] = result.summary, len(pairs)
    return Comparison(table, measured, counts)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="table name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    parser.add_argument("--limit", type=int, help="use only the first N images of each test set")
    parser.add_argument("--published", default=str(PUBLISHED), help="published-numbers YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in every config of the table (repeatable)")
    parser.add_argument("--results", type=Path, help="write the runs to DIR/<method>/<name> instead")
    parser.add_argument("--out", type=Path, default=Path("results/tables"), help="folder for <table>.md/.csv")
    parser.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    add_metric_options(parser)
    args = parser.parse_args(argv)
    try:
        tables = load_tables(Path(args.published))
        if args.list:
            for name, t in tables.items():
                print(f"{name}: {t.title} ({sum(1 for r in t.rows if r.config)} runnable of {len(t.rows)} rows)")
            return 0
        if not args.table:
            raise EvaluationError("--table NAME is required (see --list)")
        if args.limit is not None and args.limit < 1:
            raise EvaluationError(f"--limit must be >= 1, got {args.limit}")
        table = get_table(tables, args.table)
        metrics = parse_metrics(args.metrics or ",".join(table.metrics))
        try:
            rank = current_rank()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        # Rank 0 finds the metric weights before sampling, so a missing file fails in seconds.
        networks = build_networks(args, metrics) if rank.rank == 0 else None
        folders = run_rows(table, args.overrides, args.limit, args.results, args.overwrite)
        barrier(rank)
        if rank.rank != 0:
            return 0
        comparison = measure(table, folders, metrics, networks, args.batch_size)
        stem = args.out / (f"{table.name}-n{args.limit}" if args.limit else table.name)
        for suffix, text in ((".md", comparison.markdown()), (".csv", comparison.csv())):
            path = stem.with_suffix(suffix)
            if path.exists():
                print(f"replacing {path}")
            atomic_write_text(path, text)
    except (EvaluationError, ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(comparison.markdown())
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
