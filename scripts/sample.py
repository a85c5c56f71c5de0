"""Restore images (or sample the prior): `python scripts/sample.py --config FILE [--set key=value ...]`.

The run (`runs.restore`): each image of `data.input` is degraded as y = noise(A x) and restored into
the output folder's `recon/` (with `label/`, `input/`, `baseline/` and `comparison.png`); without
`task.operator` it samples the prior into `samples/`. The output folder must be new, empty, or a run
of the same config, which the command then continues: finished images are kept and a batch stopped
mid-trajectory (kill, Ctrl-C, SIGTERM, full disk) restarts from its last saved state, giving the
same PNGs as an uninterrupted run. `--overwrite` first removes that run's own files.
Exit status: 0 done, 1 some images failed or an output could not be written, 2 refused before any
work (one line naming the key or file), 130 / 143 interrupted by Ctrl-C / SIGTERM.

Under `torchrun --nproc_per_node N scripts/sample.py ...` each rank takes images rank, rank + N, ...
on cuda:LOCAL_RANK and writes its own files into the shared output folder; seeds stay per global
image index, so the outputs equal a single-process run's. No comparison.png then.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

from configs import add_config_arguments, load_config  # noqa: E402
from runs import Progress  # noqa: E402
from runs.cli import exit_status  # noqa: E402
from runs.restore import print_report, run  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, "sampler.steps=50")
    parser.add_argument("--overwrite", action="store_true",
                        help="remove the earlier run's own files from the output folder, then run")
    args = parser.parse_args(argv)
    progress = Progress()

    def action() -> int:
        return print_report(run(load_config(args.config, args.overrides), args.overwrite, progress))
    return exit_status(action, progress, prefix=f"{args.config}: " if args.config else "")


if __name__ == "__main__":
    sys.exit(main())
