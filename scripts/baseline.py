"""Classical baseline of a restoration config: `python scripts/baseline.py --config FILE [--set key=value ...]`.

Each image of `data.input` is degraded exactly as `scripts/sample.py` degrades it (same operator,
seed and per-image noise generator, so y is the same tensor), then restored without a prior:
bicubic upsampling for bicubic `super_resolution`, harmonic inpainting for `inpainting`
(`evaluation/baselines.py`). Writes `label/`, `input/`, `recon/` and `comparison.png` to `--output`
(default: the config's output + `_bicubic` / `_harmonic`), ready for `scripts/evaluate.py`. The
folder must be new, empty or an earlier baseline run of the same config (continued); `--overwrite`
first removes that run's own files.
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
from runs.baseline import run  # noqa: E402
from runs.cli import exit_status  # noqa: E402
from runs.restore import print_report  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, "data.limit=4")
    parser.add_argument("--output", help="output folder (default: <config output>_<method>)")
    parser.add_argument("--overwrite", action="store_true", help="remove the earlier baseline run's own files first")
    args = parser.parse_args(argv)

    def action() -> int:
        return print_report(run(load_config(args.config, args.overrides), args.output, args.overwrite))
    return exit_status(action, prefix=f"{args.config or '--set'}: ", resume="run the same command to continue")


if __name__ == "__main__":
    sys.exit(main())
