"""PSNR / SSIM against closed forms and skimage; pairing; evaluate.py on folders."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from evaluation import EvaluationError, Networks, evaluate, pair_images, parse_metrics, psnr, ssim
from scripts.evaluate import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]


def _uint8(seed: int, shape=(2, 3, 40, 36), low: int = 0, high: int = 256) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(low, high, shape, dtype=np.uint8))


@pytest.mark.parametrize("offset", [1, 5, -17])
def test_psnr_of_a_constant_offset_is_exact(offset: int) -> None:
    label = _uint8(0, low=20, high=230)  # no clipping after the offset
    recon = (label.int() + offset).to(torch.uint8)
    expected = 20 * math.log10(255 / abs(offset))  # MSE = (offset / 255)^2 on [0, 1]
    assert torch.allclose(psnr(recon, label), torch.full((2,), expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_crop_border_ignores_the_border() -> None:
    label = _uint8(1)
    recon = label.clone()
    recon[..., :4, :] = 255 - recon[..., :4, :]  # damage only the top 4 rows
    assert torch.isinf(psnr(recon, label, crop_border=4)).all()
    assert torch.isfinite(psnr(recon, label)).all()
    assert torch.allclose(ssim(recon, label, crop_border=4), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_ssim_identical_is_one_and_constant_images_match_the_closed_form() -> None:
    x = _uint8(2)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    a, b = 100, 160
    flat_a, flat_b = torch.full((1, 3, 16, 16), a, dtype=torch.uint8), torch.full((1, 3, 16, 16), b, dtype=torch.uint8)
    # No variance: SSIM reduces to the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    mu_a, mu_b, c1 = a / 255, b / 255, 0.01 ** 2
    expected = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    assert ssim(flat_a, flat_b).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("noise", [3.0, 25.0, 80.0])
def test_ssim_matches_skimage(noise: float) -> None:
    label = _uint8(3)
    rng = np.random.default_rng(4)
    recon = torch.from_numpy(np.clip(label.numpy() + rng.normal(0, noise, label.shape), 0, 255).astype(np.uint8))
    ours = ssim(recon, label)
    for i in range(2):
        ref = structural_similarity(recon[i].permute(1, 2, 0).numpy() / 255, label[i].permute(1, 2, 0).numpy() / 255,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=-1)
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)


def _folders(tmp_path: Path, n: int = 3, noise: float = 10.0):
    rng = np.random.default_rng(5)
    for k in range(n):
        label = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
        recon = np.clip(label + rng.normal(0, noise, label.shape), 0, 255).astype(np.uint8)
        for sub, img in (("label", label), ("recon", recon)):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / sub / f"im{k}.png")
    return tmp_path / "recon", tmp_path / "label"


def test_evaluate_pairs_by_stem_and_averages_per_image(tmp_path: Path) -> None:
    recon, label = _folders(tmp_path)
    result = evaluate(pair_images(recon, label), ["psnr", "ssim"], Networks(), batch_size=2)
    assert [r["stem"] for r in result.rows] == ["im0", "im1", "im2"]
    for metric, fn in (("psnr", psnr), ("ssim", ssim)):
        per = [fn(*(torch.from_numpy(np.array(Image.open(d / f"im{k}.png"))).permute(2, 0, 1)[None]
                    for d in (recon, label))).item() for k in range(3)]
        assert [r[metric] for r in result.rows] == pytest.approx(per, abs=1e-12)
        assert result.summary[metric] == pytest.approx(sum(per) / 3, abs=1e-12)


def test_pairing_and_metric_errors(tmp_path: Path) -> None:
    recon, label = _folders(tmp_path)
    (label / "im2.png").rename(label / "other.png")
    with pytest.raises(EvaluationError, match="1 image\\(s\\) have no label of the same stem: im2"):
        pair_images(recon, label)
    with pytest.raises(EvaluationError, match="does not exist"):
        pair_images(tmp_path / "nowhere", label)
    with pytest.raises(EvaluationError, match="did you mean 'lpips'"):
        parse_metrics("psnr,lpis")
    (label / "other.png").rename(label / "im2.png")
    Image.new("RGB", (8, 8)).save(label / "im1.png")
    with pytest.raises(EvaluationError, match="im1: recon is \\(24, 20\\) but label is \\(8, 8\\)"):
        evaluate(pair_images(recon, label), ["psnr"], Networks())
    with pytest.raises(EvaluationError, match="were not built"):
        evaluate(pair_images(recon, label), ["fid"], Networks())


def test_evaluate_script_writes_csv_and_summary_and_keeps_them(tmp_path: Path, capsys) -> None:
    recon, label = _folders(tmp_path)
    out = tmp_path / "scores"
    args = ["--recon", str(recon), "--label", str(label), "--out", str(out)]
    assert evaluate_main([*args, "--metrics", "psnr,ssim"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["psnr", "ssim"]
    lines = (out / "per_image.csv").read_text().splitlines()
    assert lines[0] == "stem,psnr,ssim" and len(lines) == 4
    assert summary["psnr"] == pytest.approx(np.mean([float(row.split(",")[1]) for row in lines[1:]]), abs=1e-12)
    assert f"psnr={summary['psnr']:.6g}" in capsys.readouterr().out
    assert evaluate_main([*args, "--metrics", "psnr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists; pass --overwrite" in err[0]


def test_evaluate_script_runs_from_the_command_line(tmp_path: Path) -> None:
    recon, label = _folders(tmp_path)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--recon", str(recon),
                             "--label", str(label), "--metrics", "psnr,ssim,lpips"], capture_output=True, text=True,
                            cwd=REPO, timeout=120, env={**os.environ, "LPIPS_BACKBONE": str(tmp_path / "no.pth")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "vgg16-397923af.pth" in result.stderr
