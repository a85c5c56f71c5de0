"""Command-line options of the scripts that score images (`evaluate.py`, `reproduce.py`): which
metrics, which weight files, which device, and the networks they need."""
from __future__ import annotations

import argparse
from typing import List

from configs import pick_device

from .evaluator import METRICS, Networks
from .perceptual import BACKBONES


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    """Add --metrics, --lpips-net, --lpips-weights, --inception-weights, --device, --batch-size."""
    parser.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)}")
    parser.add_argument("--lpips-net", default="vgg", choices=sorted(BACKBONES),
                        help="LPIPS backbone (the papers use vgg)")
    parser.add_argument("--lpips-weights", help="torchvision backbone weights file (else $LPIPS_BACKBONE, "
                                                "else $TORCH_HOME/hub/checkpoints/)")
    parser.add_argument("--inception-weights", help="torch-fidelity Inception weights file (else "
                                                    "$FID_INCEPTION_WEIGHTS, else $TORCH_HOME/hub/checkpoints/)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network call")


def build_networks(args: argparse.Namespace, metrics: List[str]) -> Networks:
    """The networks `metrics` need (LPIPS, Inception), from the weight options of `add_metric_options`."""
    return Networks.for_metrics(metrics, pick_device(args.device), args.lpips_net, args.lpips_weights,
                                args.inception_weights)
