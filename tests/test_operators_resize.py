"""Bicubic super-resolution against independent references, and the DiffPIR blur+decimation model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from operators import build_operator
from operators.resize import avgpool_matrix, bicubic_matrix, cubic


@pytest.mark.parametrize("s", [2, 4, 8])
def test_matches_pil_bicubic_away_from_border(s: int) -> None:
    """PIL's BICUBIC (a = -0.5, antialiased when reducing, same pixel-centre map) on a float 'F'
    image of 64 x 64 uniform [-1, 1] values. Interior (2 output pixels per side excluded): max
    difference measured 4.9e-8 / 1.6e-8 / 4.7e-9 for s = 2 / 4 / 8 (PIL computes in float32);
    tolerance 1e-6. On the border PIL clips and renormalises the kernel instead of mirroring:
    measured max difference 0.099 / 0.074 / 0.035 there, so the border is excluded."""
    img = np.random.default_rng(0).uniform(-1, 1, (64, 64))
    n = 64 // s
    pil = Image.fromarray(img.astype(np.float32), mode="F").resize((n, n), Image.BICUBIC)
    ours = build_operator("super_resolution", scale_factor=s)(torch.from_numpy(img)[None, None])[0, 0]
    diff = np.abs(np.asarray(pil, dtype=np.float64) - ours.numpy())
    assert diff[2:-2, 2:-2].max() < 1e-6
    assert diff.max() > 1e-3  # the border convention really differs (mirror vs clip)


def test_x4_weight_matrix_structure() -> None:
    """256 -> 64: 16 taps per interior row, symmetric about the block centre 4i + 1.5 (0-based),
    row 0 folds taps -7..8 onto columns 0..9 (mirror with edge repeat), rows sum to one."""
    w = bicubic_matrix(256, 0.25)
    assert w.shape == (64, 256)
    assert np.allclose(w.sum(axis=1), 1, atol=1e-14)
    row = w[10]
    nz = np.flatnonzero(row)
    assert nz.tolist() == list(range(40 - 6, 40 + 10))  # centre 41.5, taps 34..49
    assert np.allclose(row[nz], row[nz][::-1], atol=1e-15)
    assert np.flatnonzero(w[0]).tolist() == list(range(10))
    # Interior weights are the antialiased kernel k(t) = c(t/4)/4 at distances from 41.5, normalised.
    t = np.arange(34, 50) - 41.5
    k = cubic(t / 4) / 4
    assert np.allclose(row[nz], k / k.sum(), atol=1e-15)


def test_avgpool_is_block_mean_and_pinv_replicates() -> None:
    """GDP/DDRM sr4: 4 x 4 block means; pinv = nearest replication of y over each block."""
    assert np.allclose(avgpool_matrix(8, 4), np.kron(np.eye(2), np.full((1, 4), 0.25)))
    op = build_operator("super_resolution", scale_factor=4, mode="avgpool")
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y = op(x)
    assert torch.allclose(y, torch.nn.functional.avg_pool2d(x, 4), atol=1e-14)
    rep = y.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    assert torch.allclose(op.pinv(y), rep, atol=1e-13)


@pytest.mark.parametrize("s", [2, 4, 8])
def test_blur_decimation_analytic_kernel_equals_bicubic_inside(s: int) -> None:
    """With the analytic bicubic_sr_kernel, DiffPIR's model (circular blur, keep [0::s, 0::s]) equals the
    MATLAB bicubic resize wherever no tap crosses the border (both are the same weights)."""
    x = torch.randn(1, 2, 64, 64, dtype=torch.float64)
    a = build_operator("super_resolution", scale_factor=s)(x)
    b = build_operator("sr_blur_decimation", scale_factor=s, kernel="bicubic_sr_kernel")(x)
    m = 3 if s < 8 else 2  # output pixels whose 4s-wide support reaches the border
    inner = (a - b)[..., m:-m, m:-m]
    assert inner.abs().max() < 1e-12
    assert (a - b).abs().max() > 1e-3  # ...and differ at the border (circular vs mirror)


def test_blur_decimation_prox_reduces_to_deblur_for_s1() -> None:
    """s = 1 closed form: x = F^-1[(conj(K) Y + rho Z) / (|K|^2 + rho)]."""
    op = build_operator("gaussian_blur", kernel_size=9, intensity=1.5, boundary="circular")
    z, y = torch.randn(2, 1, 16, 16, dtype=torch.float64), torch.randn(2, 1, 16, 16, dtype=torch.float64)
    delta = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    delta[0, 0, 0, 0] = 1
    k = torch.fft.fft2(op(delta))  # transfer function = FFT of the impulse response
    expected = torch.fft.ifft2((k.conj() * torch.fft.fft2(y) + 0.7 * torch.fft.fft2(z)) / (k.abs() ** 2 + 0.7)).real
    assert torch.allclose(op.prox(z, y, 0.7), expected, atol=1e-12)


def test_sr_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="scale_factor"):
        build_operator("sr_blur_decimation", scale_factor=4)(torch.zeros(1, 1, 10, 12))
    with pytest.raises(ValueError, match="scale_factor"):
        build_operator("super_resolution", scale_factor=0)
    with pytest.raises(ValueError, match="mode"):
        build_operator("super_resolution", mode="bilinear")
