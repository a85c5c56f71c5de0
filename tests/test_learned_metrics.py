"""FID / KID through the evaluation pipeline with a small local feature extractor (the Inception
weights cannot be downloaded here); LPIPS with a local backbone file; missing weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation import EvaluationError, InceptionFeatures, LPIPS, Networks, evaluate, pair_images
from evaluation import kid_from_features
from scripts.evaluate import main as evaluate_main


class RandomConvFeatures(torch.nn.Module):
    """A fixed random conv net standing in for Inception: (B, 3, H, W) uint8 -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Tanh(),
                                       torch.nn.Conv2d(8, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float() / 127.5 - 1)


def _set(tmp_path: Path, noise: float, n: int = 40) -> Path:
    """The same n ground truths; recon = ground truth + Gaussian noise of `noise` grey levels."""
    rng = np.random.default_rng(0)
    root = tmp_path / f"noise{noise:g}"
    for sub in ("label", "recon"):
        (root / sub).mkdir(parents=True)
    for k in range(n):
        label = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        recon = np.clip(label + rng.normal(0, noise, label.shape), 0, 255).astype(np.uint8) if noise else label
        Image.fromarray(label).save(root / "label" / f"{k:03d}.png")
        Image.fromarray(recon).save(root / "recon" / f"{k:03d}.png")
    return root


def test_fid_and_kid_are_zero_for_a_set_against_itself_and_grow_with_noise(tmp_path: Path) -> None:
    networks = Networks(features=RandomConvFeatures())
    scores = []
    for noise in (0.0, 10.0, 40.0, 120.0):
        root = _set(tmp_path, noise)
        scores.append(evaluate(pair_images(root / "recon", root / "label"), ["fid", "kid"], networks).summary)
    assert abs(scores[0]["fid"]) < 1e-8 and abs(scores[0]["kid"]) < 1e-3
    fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
    assert fids == sorted(fids) and kids == sorted(kids) and fids[1] > 1e-6, (fids, kids)


def test_kid_of_a_set_against_itself_equals_its_closed_form() -> None:
    # With subset size = N every subset is the whole set: unbiased MMD^2 = 2/m (mean off-diagonal -
    # mean diagonal) of the cubic kernel k(x, y) = (x.y / D + 1)^3.
    f = torch.randn(30, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = (f @ f.T / 5 + 1) ** 3
    m = len(f)
    expected = 2 / m * ((k.sum() - k.diag().sum()) / (m * (m - 1)) - k.diag().mean())
    assert kid_from_features(f, f) == pytest.approx(expected.item(), rel=1e-10)
    with pytest.raises(EvaluationError, match="at least 2 images"):
        kid_from_features(f[:1], f[:1])


def _fake_alexnet(path: Path) -> dict:
    """A random AlexNet `features.*` state dict in torchvision's key layout."""
    g = torch.Generator().manual_seed(2)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for i, shape in shapes.items():
        state[f"features.{i}.weight"] = torch.randn(shape, generator=g) * 0.05
        state[f"features.{i}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    torch.save(state, path)
    return state


def test_lpips_loads_a_local_backbone(tmp_path: Path) -> None:
    state = _fake_alexnet(tmp_path / "alex.pth")
    metric = LPIPS("alex", str(tmp_path / "alex.pth"))
    assert torch.equal(metric.model.net.state_dict()["slice2.3.weight"], state["features.3.weight"])
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    noisy = [(x.int() + torch.randint(-s, s + 1, x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 255)
             .to(torch.uint8) for s in (10, 60)]
    assert torch.equal(metric(x, x), torch.zeros(2, dtype=torch.float64))
    d_small, d_large = metric(noisy[0], x), metric(noisy[1], x)
    assert (d_small > 0).all() and (d_large > d_small).all()
    torch.save({"features.0.weight": state["features.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(EvaluationError, match="is not the torchvision alex ImageNet state dict"):
        LPIPS("alex", str(tmp_path / "partial.pth"))


def test_wrong_inception_file_is_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "inception.pth")
    with pytest.raises(EvaluationError, match="is not torch-fidelity's Inception-v3 state dict"):
        InceptionFeatures(str(tmp_path / "inception.pth"))


@pytest.mark.parametrize("metric,variable,url", [
    ("lpips", "LPIPS_BACKBONE", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    ("fid", "FID_INCEPTION_WEIGHTS", "weights-inception-2015-12-05-6726825d.pth"),
    ("kid", "FID_INCEPTION_WEIGHTS", "weights-inception-2015-12-05-6726825d.pth"),
])
def test_missing_weights_give_one_line(tmp_path: Path, monkeypatch, capsys, metric: str, variable: str,
                                       url: str) -> None:
    root = _set(tmp_path, 0.0, n=2)
    missing = tmp_path / "none" / "weights.pth"
    monkeypatch.setenv(variable, str(missing))
    code = evaluate_main(["--recon", str(root / "recon"), "--label", str(root / "label"),
                          "--metrics", f"psnr,{metric}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert str(missing) in lines[0] and url in lines[0] and variable in lines[0]
    assert not (root / "metrics").exists()


def test_inception_features_run_from_a_local_file(tmp_path: Path, monkeypatch) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    # A file in torch-fidelity's format with random weights: build the network without loading any.
    with monkeypatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        random_net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(random_net.state_dict(), tmp_path / "inception.pth")
    features = InceptionFeatures(str(tmp_path / "inception.pth"))
    x = torch.from_numpy(np.random.default_rng(6).integers(0, 256, (3, 3, 64, 48), dtype=np.uint8))
    out = features(x)
    assert out.shape == (3, 2048) and out.dtype == torch.float32
    assert torch.equal(out, random_net(x)[0])
