"""Classical baselines: bicubic upsampling and harmonic inpainting against closed forms, and
scripts/baseline.py degrading exactly as scripts/sample.py does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evaluation.baselines import bicubic_upsample, classical_method, harmonic_inpaint
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


def test_classical_method_by_operator() -> None:
    assert classical_method(build_operator("super_resolution", scale_factor=2)) == "bicubic"
    assert classical_method(build_operator("inpainting", mask_type="random", image_size=8, seed=0)) == "harmonic"
    with pytest.raises(ValueError, match="no classical baseline"):
        classical_method(build_operator("super_resolution", scale_factor=2, mode="avgpool"))


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
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "baseline.py"), "--config", str(path)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
