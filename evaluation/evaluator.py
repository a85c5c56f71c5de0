"""Evaluate paired restorations: per-image PSNR / SSIM / LPIPS and set-level FID / KID in one pass."""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from guided_diffusion.files import atomic_write_text
from guided_diffusion.image_io import load_image

from .errors import EvaluationError
from .fid import InceptionFeatures, fid_from_features, kid_from_features
from .files import csv_text, refuse_existing
from .metrics import SSIM_WINDOW, psnr, ssim
from .pairs import Pair
from .perceptual import LPIPS

PER_IMAGE = ("psnr", "ssim", "lpips")
PER_SET = ("fid", "kid")
METRICS = PER_IMAGE + PER_SET
CSV_NAME, SUMMARY_NAME = "per_image.csv", "summary.json"

FeatureExtractor = Callable[[Tensor], Tensor]  # (B, 3, H, W) uint8 -> (B, D) float
PairMetric = Callable[[Tensor, Tensor], Tensor]  # two (B, 3, H, W) uint8 batches -> (B,)


def parse_metrics(text: str) -> List[str]:
    """'psnr,ssim' -> ['psnr', 'ssim']; an unknown name is a one-line error with a suggestion."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(name, METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EvaluationError(f"unknown metric {name!r}{hint}; known: {', '.join(METRICS)}")
    if not names:
        raise EvaluationError(f"no metric given; known: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


@dataclass
class Networks:
    """The learned parts, built (and their weights found) before any image is read."""

    lpips: Optional[PairMetric] = None
    features: Optional[FeatureExtractor] = None

    @classmethod
    def for_metrics(cls, metrics: Sequence[str], device: torch.device, lpips_net: str = "vgg",
                    lpips_weights: Optional[str] = None, inception_weights: Optional[str] = None) -> "Networks":
        return cls(
            lpips=LPIPS(lpips_net, lpips_weights, device) if "lpips" in metrics else None,
            features=InceptionFeatures(inception_weights, device) if set(PER_SET) & set(metrics) else None)


@dataclass
class Result:
    """Per-image rows ({'stem': ..., metric: value}), the summary (metric -> mean or set value) and
    the pairs skipped because a file could not be read (stem -> reason)."""

    rows: List[Dict[str, object]]
    summary: Dict[str, float]
    skipped: Dict[str, str] = field(default_factory=dict)


def load_uint8(path: Path) -> Tensor:
    """(3, H, W) uint8, exactly the PNG's values (RGB)."""
    return ((load_image(path) + 1) * 127.5).round().to(torch.uint8)


def _batches(pairs: Sequence[Pair], batch_size: int,
             skipped: Dict[str, str]) -> Iterator[Tuple[List[Pair], Tensor, Tensor]]:
    """Consecutive pairs, loaded, grouped so that every batch holds one image size. A pair with an
    unreadable file (or one above the pixel cap) is left out and recorded in `skipped`."""
    batch: List[Pair] = []
    recon: List[Tensor] = []
    label: List[Tensor] = []
    for pair in pairs:
        try:
            r, lab = load_uint8(pair.recon), load_uint8(pair.label)
        except (OSError, ValueError) as err:
            skipped[pair.stem] = f"skipped, cannot use the file: {str(err).splitlines()[0]}"
            continue
        if r.shape != lab.shape:
            raise EvaluationError(f"{pair.stem}: recon is {tuple(r.shape[1:])} but label is {tuple(lab.shape[1:])}")
        if recon and (len(batch) == batch_size or r.shape != recon[0].shape):
            yield batch, torch.stack(recon), torch.stack(label)
            batch, recon, label = [], [], []
        batch.append(pair)
        recon.append(r)
        label.append(lab)
    if batch:
        yield batch, torch.stack(recon), torch.stack(label)


def evaluate(pairs: Sequence[Pair], metrics: Sequence[str], networks: Networks, crop_border: int = 0,
             batch_size: int = 16) -> Result:
    """Compute `metrics` over `pairs`. PSNR and SSIM ignore `crop_border` pixels on each side;
    LPIPS, FID and KID always see the whole image."""
    if not pairs:
        raise EvaluationError("no image pairs to evaluate")
    if crop_border < 0 or batch_size < 1:
        raise EvaluationError(f"crop_border must be >= 0 and batch_size >= 1, got {crop_border} and {batch_size}")
    if ("lpips" in metrics and networks.lpips is None) or (set(PER_SET) & set(metrics) and networks.features is None):
        raise EvaluationError("the networks for LPIPS / FID / KID were not built (Networks.for_metrics)")
    if {"psnr", "ssim"} & set(metrics):  # the metrics that see the cropped image; checked before any work
        for pair in pairs:
            _check_crop(crop_border, _header_size(pair.recon), pair.stem, "ssim" in metrics)
    rows: List[Dict[str, object]] = []
    skipped: Dict[str, str] = {}
    feats: Dict[str, List[Tensor]] = {"recon": [], "label": []}
    with tqdm(total=len(pairs), desc="evaluate", unit="img") as bar:
        for batch, recon, label in _batches(pairs, batch_size, skipped):
            values: Dict[str, Tensor] = {}
            if "psnr" in metrics:
                values["psnr"] = psnr(recon, label, crop_border)
            if "ssim" in metrics:
                values["ssim"] = ssim(recon, label, crop_border)
            if "lpips" in metrics:
                values["lpips"] = networks.lpips(recon, label)
            if set(PER_SET) & set(metrics):
                feats["recon"].append(networks.features(recon))
                feats["label"].append(networks.features(label))
            for j, pair in enumerate(batch):
                rows.append({"stem": pair.stem, **{m: float(v[j]) for m, v in values.items()}})
            bar.update(len(batch))
    if not rows:
        first = next(iter(skipped.items()))
        raise EvaluationError(f"none of the {len(pairs)} image pair(s) could be read ({first[0]}: {first[1]})")
    summary: Dict[str, float] = {}
    for m in metrics:
        if m in PER_IMAGE:
            summary[m] = sum(float(r[m]) for r in rows) / len(rows)
        else:
            metric = fid_from_features if m == "fid" else kid_from_features
            summary[m] = metric(torch.cat(feats["recon"]), torch.cat(feats["label"]))
    return Result(rows, summary, skipped)


def _header_size(path: Path) -> Optional[Tuple[int, int]]:
    """(H, W) from the file's header without decoding it; None when unreadable (skipped later)."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError):
        return None


def _check_crop(crop_border: int, size: Optional[Tuple[int, int]], stem: str, with_ssim: bool) -> None:
    """Refuse a crop border that leaves nothing of the image (or less than SSIM's window)."""
    if size is None:
        return
    h, w = size[0] - 2 * crop_border, size[1] - 2 * crop_border
    need = SSIM_WINDOW if with_ssim else 1
    if min(h, w) >= need:
        return
    where = f"image {stem!r} is {size[1]}x{size[0]}"
    if min(h, w) < 1:
        raise EvaluationError(f"{where}: crop border {crop_border} leaves nothing of it")
    raise EvaluationError(f"{where}: crop border {crop_border} leaves {w}x{h}; SSIM needs at least {need}x{need}")


def json_safe(summary: Dict[str, float]) -> Dict[str, Optional[float]]:
    """The summary with non-finite values as null: PSNR of identical images is +inf, which JSON cannot hold."""
    return {k: v if isinstance(v, (int, float)) and math.isfinite(v) else None for k, v in summary.items()}


def result_paths(out: Path) -> List[Path]:
    """The files `write_result` writes into `out`."""
    return [Path(out) / CSV_NAME, Path(out) / SUMMARY_NAME]


def write_result(result: Result, out: Path, overwrite: bool = False) -> List[Path]:
    """Write `per_image.csv` (stem + per-image metrics) and `summary.json` (metric -> value, null
    where not finite: the mean PSNR when some pair is identical) to `out`."""
    csv_path, summary_path = result_paths(out)
    refuse_existing([csv_path, summary_path], overwrite)
    columns = [m for m in PER_IMAGE if result.rows and m in result.rows[0]]
    atomic_write_text(csv_path, csv_text(["stem", *columns], ([r["stem"], *(r[m] for m in columns)]
                                                               for r in result.rows)))
    atomic_write_text(summary_path, json.dumps(json_safe(result.summary), indent=2, allow_nan=False) + "\n")
    return [csv_path, summary_path]


def format_summary(summary: Dict[str, float], n_images: int) -> str:
    """One line: 'n=1000 psnr=25.1234 ssim=0.7012 ...'."""
    return " ".join([f"n={n_images}"] + [f"{k}={v:.6g}" for k, v in summary.items()])
