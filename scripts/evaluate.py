"""Score restorations against ground truths: `python scripts/evaluate.py --recon DIR --label DIR`.

Images are paired by file stem. Writes `per_image.csv` (PSNR, SSIM, LPIPS per image) and
`summary.json` (metric -> mean over images; FID and KID are set-level; null where the value is not
finite, e.g. the mean PSNR when a pair is identical) to `--out` (default: the `metrics/` folder
beside `--recon`) and prints the summary. `--out` must be new, empty or an earlier evaluate run
(`runs.folder`); its outputs are kept unless `--overwrite`, which removes only that run's files. A pair
with an unreadable file is skipped and named, the others are scored, and the exit status is 1.
Protocol and weight files: docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runs.interrupt import quiet_start  # noqa: E402

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports below: one line, not a traceback

from evaluation import EvaluationError, evaluate, format_summary, pair_images, parse_metrics  # noqa: E402
from evaluation import write_result  # noqa: E402
from evaluation.evaluator import METRICS, json_safe, result_paths  # noqa: E402
from evaluation.files import refuse_existing  # noqa: E402
from evaluation.options import add_metric_options, build_networks  # noqa: E402
from runs import RunFolder  # noqa: E402
from runs.cli import exit_status, print_failures  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recon", required=True, help="folder of restored images")
    parser.add_argument("--label", required=True, help="folder of ground-truth images (same stems)")
    parser.add_argument("--out", help="output folder (default: <recon>/../metrics)")
    parser.add_argument("--crop-border", type=int, default=0, help="pixels PSNR/SSIM ignore on each side")
    parser.add_argument("--overwrite", action="store_true", help="replace existing per_image.csv / summary.json")
    add_metric_options(parser)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.recon).absolute().parent / "metrics"

    def action() -> int:
        try:
            metrics = parse_metrics(args.metrics or ",".join(METRICS))
            inputs = [Path(args.recon), Path(args.label)]
            RunFolder.check(out, "evaluate", inputs)  # before the work: a folder of other files is refused
            refuse_existing(result_paths(out), args.overwrite)
            pairs = pair_images(Path(args.recon), Path(args.label))
            result = evaluate(pairs, metrics, build_networks(args, metrics), args.crop_border, args.batch_size)
            run = RunFolder.claim(out, "evaluate", inputs, overwrite=args.overwrite)
            run.record(p.name for p in result_paths(out))
            written = write_result(result, out, args.overwrite)
        except EvaluationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(format_summary(result.summary, len(result.rows)))
        print(json.dumps(json_safe(result.summary), indent=2))
        print(f"wrote {', '.join(str(p) for p in written)}")
        if result.skipped:
            print_failures("image pair(s) skipped", result.skipped)
            return 1
        return 0
    # Nothing to resume: a run that stopped wrote no result, or (a full disk) part of it.
    return exit_status(action, resume="run the command again, with --overwrite if a result file was written")


if __name__ == "__main__":
    sys.exit(main())
