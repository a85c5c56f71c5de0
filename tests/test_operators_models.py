"""Masks, colorization, phase retrieval, GDP exposure models and noise (non-dense checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators import build_noise, build_operator, sigma_from_255
from operators.base import NonlinearOperatorError
from operators.inpainting import box_mask


def test_box_mask_matches_dps() -> None:
    """128 x 128 hole; top/left uniform over [16, 111] for 256 images (all values reached)."""
    tops, lefts = set(), set()
    for seed in range(1000):
        m = box_mask((256, 256), 128, 16, np.random.default_rng(seed))
        rows, cols = np.nonzero(m == 0)
        assert rows.max() - rows.min() + 1 == 128 and cols.max() - cols.min() + 1 == 128
        assert (m == 0).sum() == 128 * 128
        tops.add(rows.min())
        lefts.add(cols.min())
    assert tops == set(range(16, 112)) and lefts == set(range(16, 112))


def test_random_mask_fraction_and_channels() -> None:
    """Missing fraction p ~ U(lo, hi): int(H W p) zeros, identical in every channel; seeded."""
    fractions = []
    for seed in range(20):
        op = build_operator("inpainting", mask_type="random", image_size=64, mask_prob_range=[0.3, 0.7], seed=seed)
        fractions.append(1 - op.mask.mean().item())
        y = op(torch.ones(1, 3, 64, 64))
        assert torch.equal(y[0, 0], y[0, 1]) and torch.equal(y[0, 0], y[0, 2])
    assert all(0.3 - 1 / 4096 <= f <= 0.7 for f in fractions) and np.std(fractions) > 0.05
    fixed = build_operator("inpainting", mask_type="random", image_size=64, mask_prob_range=[0.5, 0.5], seed=3)
    assert (fixed.mask == 0).sum() == 2048
    again = build_operator("inpainting", mask_type="random", image_size=64, mask_prob_range=[0.5, 0.5], seed=3)
    assert torch.equal(fixed.mask, again.mask)


def test_mask_file_white_is_observed(tmp_path) -> None:
    op = build_operator("inpainting", mask_type="box", image_size=64, box_size=20, margin=4, seed=1)
    op.save_mask(tmp_path / "mask.png")
    again = build_operator("inpainting", mask_path=str(tmp_path / "mask.png"))
    assert torch.equal(again.mask, op.mask) and op.mask.mean() > 0.5  # mostly observed (white)
    extreme = build_operator("inpainting", mask_type="extreme", image_size=64, box_size=20, margin=4, seed=1)
    assert torch.equal(extreme.mask, 1 - op.mask)


def test_colorization_weights_and_pinv() -> None:
    op = build_operator("colorization")
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    y = op(x)
    assert y.shape == (2, 1, 4, 5)
    assert torch.allclose(y[:, 0], 0.3333 * x[:, 0] + 0.3334 * x[:, 1] + 0.3333 * x[:, 2], atol=1e-15)
    assert torch.allclose(op.pinv(y), y.expand(2, 3, 4, 5), atol=3e-4)  # ~ gray replicated


def test_phase_retrieval_matches_centred_orthonormal_fft() -> None:
    """pad int(2.0/8 * 32) = 8 per side; y = |fftshift(fft2(ifftshift(pad x), ortho))|; Parseval."""
    op = build_operator("phase_retrieval", oversample=2.0)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    y = op(x)
    assert y.shape == (2, 3, 48, 48) and not op.is_linear
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (8, 8), (8, 8)))
    ref = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)))
    assert np.allclose(y.numpy(), ref, atol=1e-12)
    assert torch.allclose(y.square().sum(dim=(2, 3)), x.square().sum(dim=(2, 3)))
    with pytest.raises(NonlinearOperatorError, match="nonlinear: it has no transpose"):
        op.transpose(y)
    vis = op.visualize(y)
    assert vis.shape == y.shape and 0 <= vis.min() and vis.max() <= 1


def test_phase_retrieval_is_differentiable() -> None:
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(build_operator("phase_retrieval"), (x,), fast_mode=True)


@pytest.mark.parametrize("name, size", [("low_light", (400, 600)), ("hdr", (1060, 1900))])
def test_gdp_exposure_model(name: str, size: tuple) -> None:
    """y = 2 (f x01 + M) - 1 with learnable f, M (GDP defaults: sizes, f = randn/100, M = U/1e4)."""
    op = build_operator(name)
    assert op.M.shape == (1, 1, *size) and isinstance(op.f, torch.nn.Parameter) and not op.is_linear
    assert abs(op.f.item()) < 0.1 and 0 <= op.M.min() and op.M.max() <= 1e-4
    small = build_operator(name, image_size=[8, 10], f_init=0.5, M_init=0.1)
    x = torch.rand(2, 3, 4, 6, dtype=torch.float64) * 2 - 1
    y = small(x, offset=(2, 3))
    assert torch.allclose(y, 2 * (0.5 * (x + 1) / 2 + 0.1) - 1)
    (y - 0.2).square().mean().backward()  # gradients reach the degradation parameters
    assert small.f.grad is not None and small.M.grad[..., 2:6, 3:9].abs().min() > 0
    assert small.M.grad[..., :2, :].abs().max() == 0
    with pytest.raises(ValueError, match="outside"):
        small(x, offset=(6, 0))


def test_gaussian_noise_uses_only_the_generator() -> None:
    noise = build_noise("gaussian", sigma=0.05)
    y = torch.zeros(4, 3, 64, 64)
    torch.manual_seed(0)
    a = noise(y, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(1)  # the global RNG must not matter
    b = noise(y, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert abs(a.std().item() - 0.05) < 0.001 and abs(a.mean().item()) < 0.001
    with pytest.raises(TypeError):
        noise(y)


def test_sigma_conversion() -> None:
    """DiffPIR noise_level_img = 12.75/255 (a [0,1]-range std) is 0.1 on [-1, 1]."""
    assert sigma_from_255(12.75) == pytest.approx(0.1, abs=1e-15)
    assert build_noise("gaussian", sigma_255=12.75).sigma == pytest.approx(0.1, abs=1e-15)
    with pytest.raises(ValueError, match="not both"):
        build_noise("gaussian", sigma=0.1, sigma_255=12.75)


def test_poisson_noise_is_dps_definition() -> None:
    """y = clamp(2 Poisson(255 rate x01) / (255 rate) - 1, -1, 1): same draws as torch.poisson,
    and mean/variance of y at x01 = 0.5, rate 1: mean 0, var 4 * 127.5 / 255^2 = 0.00784."""
    noise = build_noise("poisson", rate=1.0)
    y = torch.zeros(2, 3, 64, 64)
    out = noise(y, generator=torch.Generator().manual_seed(3))
    counts = torch.poisson(torch.full_like(y, 127.5), generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, (2 * counts / 255 - 1).clamp(-1, 1))
    assert abs(out.mean().item()) < 0.005 and abs(out.var().item() - 4 * 127.5 / 255**2) < 5e-4
    edge = noise(torch.tensor([-1.0, 1.5]).repeat(500), generator=torch.Generator().manual_seed(0))
    assert (edge[0::2] == -1).all() and edge[1::2].max() == 1  # clamped on both ends


def test_unknown_noise() -> None:
    with pytest.raises(ValueError, match="did you mean 'gaussian'"):
        build_noise("gausian", sigma=0.1)
    with pytest.raises(ValueError, match="'std'"):
        build_noise("gaussian", std=0.1)
