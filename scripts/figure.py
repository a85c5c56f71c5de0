"""Comparison figure of a table: `python scripts/figure.py --table NAME [--limit N] [--images K]`.

One grid row per method (the measurement, each sampler row, the classical baselines, the ground
truth), one column per task, a block of rows per image; each tile carries its PSNR against the
truth (`evaluation.table_figures`). Reads the run folders `reproduce.py` writes (same `--limit` /
`--results` / `--published`); `reproduce.py` also writes this figure next to its table. Writes a
PNG (default results/figures/<table>[-nN].png).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

from evaluation import EvaluationError, get_table, load_tables  # noqa: E402
from evaluation.files import refuse_existing  # noqa: E402
from evaluation.table_figures import table_figure  # noqa: E402
from evaluation.tables import PUBLISHED  # noqa: E402
from guided_diffusion.image_io import save_image  # noqa: E402
from runs.cli import exit_status  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="table name in the published-numbers file")
    parser.add_argument("--limit", type=int, help="the --limit the runs were made with")
    parser.add_argument("--results", type=Path, help="the --results the runs were made with")
    parser.add_argument("--published", default=str(PUBLISHED), help="published-numbers YAML file")
    parser.add_argument("--images", type=int, default=2, help="images shown (first stems in order)")
    parser.add_argument("--out", type=Path, help="PNG path (default results/figures/<table>[-nN].png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    args = parser.parse_args(argv)
    name = f"{args.table}-n{args.limit}" if args.limit else args.table
    out = args.out or Path("results/figures") / f"{name}.png"

    def action() -> int:
        try:
            refuse_existing([out], args.overwrite)
            table = get_table(load_tables(Path(args.published)), args.table)
            figure, rows, columns = table_figure(table, args.limit, args.results, args.images)
            save_image(figure, out)
        except EvaluationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {out} ({rows} row(s) x {columns} column(s))")
        return 0
    return exit_status(action, resume="run the command again")


if __name__ == "__main__":
    sys.exit(main())
