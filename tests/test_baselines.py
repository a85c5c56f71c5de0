"""Classical baselines: bicubic upsampling, harmonic inpainting and Wiener deconvolution against
closed forms, and scripts/baseline.py degrading exactly as scripts/sample.py does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evaluation.baselines import (GRADIENT_STD, bicubic_upsample, classical_method, classical_restore,
                                  harmonic_inpaint, noise_std, wiener_deconvolve)
from operators import build_operator

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_upsampling_reproduces_quadratics_inside(factor: int) -> None:
    # Keys' cubic (a = -0.5) is exact for polynomials up to degree 2. A low-res pixel i sits at
    # high-res coordinate factor * (i + 0.5) - 0.5, so sample the same quadratic on both grids.
    n = 16
    def quad(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return 0.3 + 0.02 * u - 0.01 * v + 0.001 * u * u - 0.002 * u * v + 0.0005 * v * v
    lo = torch.arange(n, dtype=torch.float64) * factor + (factor - 1) / 2
    hi = torch.arange(n * factor, dtype=torch.float64)
    y = quad(lo[:, None], lo[None, :])[None, None]
    up = bicubic_upsample(y, factor)[0, 0]
    inner = slice(2 * factor, -2 * factor)  # the mirrored border is not polynomial
    truth = quad(hi[:, None], hi[None, :])
    assert up.shape == (n * factor, n * factor)
    assert torch.allclose(up[inner, inner], truth[inner, inner], atol=1e-12)


def test_harmonic_inpainting_is_exact_on_linear_images_and_keeps_observed_pixels() -> None:
    h, w = 24, 20
    rng = np.random.default_rng(0)
    mask = torch.from_numpy((rng.random((h, w)) > 0.7).astype(np.float64))
    mask[0, 0] = 1
    u, v = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    x = torch.stack([0.1 * u - 0.05 * v, -0.02 * u + 0.3, 0.04 * v - 0.5])[None]
    # A linear image is harmonic in the interior but not at Neumann borders: test a masked
    # interior block with a known frame, where the discrete solution equals the image exactly.
    frame = torch.ones(h, w, dtype=torch.float64)
    frame[5:15, 4:14] = mask[5:15, 4:14]
    out = harmonic_inpaint(x * frame, frame)
    assert torch.allclose(out, x, atol=1e-10)
    # Random mask everywhere: observed pixels unchanged, each missing pixel the mean of its neighbours.
    y = torch.randn(1, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * mask
    out = harmonic_inpaint(y, mask)
    known = mask.bool()
    assert torch.equal(out[..., known], y[..., known])
    padded = torch.nn.functional.pad(out, (1, 1, 1, 1), mode="replicate")  # reflecting border: ghost = self
    neighbours = padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]
    assert torch.allclose((neighbours / 4)[..., ~known], out[..., ~known], atol=1e-10)


def _circular_matrix(kernel: np.ndarray, h: int, w: int) -> np.ndarray:
    """The (h w, h w) matrix of circular convolution centred at floor(k/2), built pixel by pixel."""
    kh, kw = kernel.shape
    a = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            for u in range(kh):
                for v in range(kw):
                    a[i * w + j, ((i - u + kh // 2) % h) * w + (j - v + kw // 2) % w] += kernel[u, v]
    return a


def test_wiener_deconvolution_solves_its_normal_equation() -> None:
    h, w = 6, 8
    op = build_operator("gaussian_blur", kernel_size=5, intensity=1.0, boundary="circular")
    y = torch.randn(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(op(torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)).reshape(h * w, h * w).T,
                          torch.from_numpy(_circular_matrix(op.kernel.numpy(), h, w)), atol=1e-12)
    a = _circular_matrix(op.kernel.numpy(), h, w)
    d_h = np.roll(np.eye(h), 1, axis=1) - np.eye(h)  # circular forward differences
    d_w = np.roll(np.eye(w), 1, axis=1) - np.eye(w)
    d = np.vstack([np.kron(d_h, np.eye(w)), np.kron(np.eye(h), d_w)])
    weights = torch.tensor([0.3, 0.02], dtype=torch.float64)
    out = wiener_deconvolve(op, y, weights)
    for n, weight in enumerate(weights.tolist()):
        normal = a.T @ a + weight * d.T @ d
        for c in range(3):
            x = np.linalg.solve(normal, a.T @ y[n, c].numpy().ravel())
            assert np.allclose(out[n, c].numpy().ravel(), x, atol=1e-10)


def test_noise_std_is_estimated_from_a_blurred_measurement() -> None:
    op = build_operator("gaussian_blur", kernel_size=13, intensity=1.5, boundary="circular")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=g) * 2 - 1
    y = op(x) + torch.tensor([0.05, 0.0], dtype=torch.float64).reshape(2, 1, 1, 1) * torch.randn(
        2, 3, 64, 64, dtype=torch.float64, generator=g)
    sigma = noise_std(y)
    assert abs(sigma[0].item() - 0.05) < 0.003  # MAD of 3072 details: std of the estimate ~ 0.0011
    assert sigma[1].item() < 0.02  # the blurred image alone (std 0.58): 2 % of it leaks into that band


def test_wiener_restore_keeps_constants_and_beats_the_blurred_image() -> None:
    op = build_operator("gaussian_blur", kernel_size=13, intensity=1.5, boundary="circular")
    const = torch.full((1, 3, 16, 16), 0.25, dtype=torch.float64)
    assert torch.allclose(classical_restore(op, op(const)), const, atol=1e-12)
    u, v = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64),
                          indexing="ij")
    x = (0.6 * torch.sin(2 * np.pi * 3 * u / 32) * torch.cos(2 * np.pi * 2 * v / 32)).expand(1, 3, 32, 32)
    y = op(x) + 0.05 * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    blurred_error = (y - x).pow(2).mean().item()
    restored_error = (classical_restore(op, y) - x).pow(2).mean().item()
    assert restored_error < 0.5 * blurred_error
    assert GRADIENT_STD == 0.4  # the value picked on data/demo_val (configs/demo/SWEEPS.md)


def test_classical_method_by_operator() -> None:
    assert classical_method(build_operator("super_resolution", scale_factor=2)) == "bicubic"
    assert classical_method(build_operator("inpainting", mask_type="random", image_size=8, seed=0)) == "harmonic"
    assert classical_method(build_operator("gaussian_blur", kernel_size=5, boundary="circular")) == "wiener"
    with pytest.raises(ValueError, match="no classical baseline"):
        classical_method(build_operator("super_resolution", scale_factor=2, mode="avgpool"))
    with pytest.raises(ValueError, match="circular-boundary blur"):
        classical_method(build_operator("gaussian_blur", kernel_size=5, boundary="reflect"))


def test_baseline_script_sees_the_sample_scripts_measurements(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k in range(2):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(images / f"im{k}.png")
    cfg = {"model": {"checkpoint": str(tiny_checkpoint)}, "sampler": {"name": "ddim", "steps": 2},
           "task": {"operator": {"name": "inpainting", "mask_type": "random", "mask_prob_range": [0.5, 0.5],
                                 "image_size": 32, "seed": 0},
                    "noise": {"name": "gaussian", "sigma": 0.1}},
           "data": {"input": str(images)}, "seed": 5, "output": str(tmp_path / "run")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for script in ("sample.py", "baseline.py"):
        result = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--config", str(path)],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    base = tmp_path / "run_harmonic"
    for stem in ("im0", "im1"):  # the same noisy measurement, bit for bit
        assert (base / "input" / f"{stem}.png").read_bytes() == (tmp_path / "run" / "input" / f"{stem}.png").read_bytes()
        assert (base / "label" / f"{stem}.png").read_bytes() == (images / f"{stem}.png").read_bytes()
    assert (base / "comparison.png").exists()
    changed = subprocess.run([sys.executable, str(REPO / "scripts" / "baseline.py"), "--config", str(path),
                              "--set", "seed=6"], capture_output=True, text=True, cwd=tmp_path)
    assert changed.returncode == 2 and "seed = 5, not 6" in changed.stderr and "--overwrite" in changed.stderr
