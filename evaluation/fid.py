"""FID and KID from image features, with torch-fidelity's statistics, and its Inception-v3 extractor.

A feature extractor is any callable mapping a (B, 3, H, W) uint8 batch to (B, D) float features.
The metric functions below are the only FID/KID code path: the Inception extractor and the small
extractors of the tests feed the same functions.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .errors import EvaluationError
from .weights import load_state_dict, local_weights

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
ENV_VAR = "FID_INCEPTION_WEIGHTS"
KID_SUBSETS, KID_MAX_SUBSET = 100, 1000  # torch-fidelity's defaults


class InceptionFeatures:
    """torch-fidelity's `inception-v3-compat` (the TF-FID Inception graph, bilinear resize to 299 as
    TF 1.x): (B, 3, H, W) uint8 -> (B, 2048) pool features."""

    def __init__(self, weights: Optional[str] = None, device: torch.device = torch.device("cpu")):
        path = local_weights("FID Inception-v3", INCEPTION_FILE, INCEPTION_URL, ENV_VAR, weights)
        # torch-fidelity reads the file with weights_only=False; reading it safely first refuses a
        # file that would run pickled code.
        load_state_dict(path, "Inception-v3")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=str(path))
        except RuntimeError as err:  # load_state_dict mismatch
            raise EvaluationError(f"{path} is not torch-fidelity's Inception-v3 state dict "
                                  f"({str(err).splitlines()[0]})") from None
        self.net.to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.net(images.to(self.device))[0].cpu()


def _check(features_1: Tensor, features_2: Tensor, metric: str) -> None:
    if min(len(features_1), len(features_2)) < 2:
        raise EvaluationError(f"{metric} needs at least 2 images per set, got {len(features_1)} and {len(features_2)}")


def fid_from_features(features_1: Tensor, features_2: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (torch-fidelity's
    statistics: mean, unbiased covariance, trace of sqrt(S1 S2) from eigenvalues). >= 0 up to rounding."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    _check(features_1, features_2, "FID")
    stats = [fid_features_to_statistics(f.double()) for f in (features_1, features_2)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"])


def kid_from_features(features_1: Tensor, features_2: Tensor) -> float:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel (gamma 1/D, coef0 1),
    mean over 100 random subsets of min(1000, N) images (torch-fidelity's defaults and seed).
    Can be slightly negative; for a set against itself it is -2/m (mean diagonal - mean off-diagonal
    kernel value) with m = subset size, i.e. O(1/m)."""
    from torch_fidelity.metric_kid import kid_features_to_metric
    _check(features_1, features_2, "KID")
    size = min(KID_MAX_SUBSET, len(features_1), len(features_2))
    out = kid_features_to_metric(features_1.double(), features_2.double(), kid_subsets=KID_SUBSETS,
                                 kid_subset_size=size, verbose=False)
    return float(out["kernel_inception_distance_mean"])
