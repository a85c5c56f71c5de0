"""Pick a run config's settings on validation images: `python scripts/sweep.py --config FILE --grid KEY=V1,V2,...`.

Runs the config once per grid point (the Cartesian product of the `--grid` options, dotted keys as
`--set`) on the images of `--data` (default data/demo_val: never the test crops) into
`--results/<task>/<config stem>/<key=value,...>`, scores each run (mean PSNR / SSIM) and prints a
Markdown table with the best PSNR in bold; `--out FILE` also writes it. A rerun resumes
(`evaluation.sweep`). With `--classical` the grid holds keywords of the config's classical baseline
(e.g. `--grid gradient_std=0.05,0.1` for Wiener deconvolution), restored in memory.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

from evaluation import EvaluationError  # noqa: E402
from evaluation.sweep import classical_sweep, markdown, parse_grid, sweep  # noqa: E402
from guided_diffusion.files import atomic_write_text  # noqa: E402
from runs.cli import exit_status  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config whose settings are swept")
    parser.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                        help="values of one setting (repeatable: the product is run)")
    parser.add_argument("--data", default="data/demo_val", help="validation images (default data/demo_val)")
    parser.add_argument("--results", type=Path, default=Path("results/sweeps"), help="folder of the runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of every run (repeatable)")
    parser.add_argument("--classical", action="store_true", help="sweep the classical baseline's keywords")
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    command = "python scripts/sweep.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    def action() -> int:
        try:
            grid = parse_grid(args.grid)
            points = (classical_sweep(args.config, grid, args.data, args.overrides) if args.classical
                      else sweep(args.config, grid, args.data, args.results, args.overrides))
        except EvaluationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        text = markdown(points, f"`{command}` ({args.data}, mean over its images)")
        print(text)
        if args.out:
            atomic_write_text(args.out, text)
        return 0
    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main())
