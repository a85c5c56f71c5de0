"""Patch-based any-size restoration: GDP's corners, seamless merging, and a non-square run."""
from __future__ import annotations

import pytest
import torch

from guided_diffusion import TINY_FLAGS, create_model
from operators import build_operator
from samplers import PatchedModel, build_sampler
from samplers.patches import patch_starts

pytestmark = pytest.mark.usefixtures("one_thread")
T0 = torch.zeros(1, dtype=torch.long)


def pointwise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A translation-equivariant stand-in for the network: eps and learned-variance channels."""
    return torch.cat([0.3 * torch.tanh(x), 0.5 * torch.sin(x)], dim=1)


def border_effect(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Output that depends on the position inside the patch (0.1 j / p at local column j), like a
    network's padding effects: overlapping patches disagree."""
    j = torch.arange(x.shape[-1], dtype=x.dtype)
    return x + 0.1 * j / x.shape[-1]


def test_corners_are_gdps() -> None:
    """GDP at 400 x 600 with 256-patches, stride 128: h {0, 128, 144}, w {0, 128, 256, 344} (12)."""
    assert patch_starts(400, 256, 128) == [0, 128, 144]
    assert patch_starts(600, 256, 128) == [0, 128, 256, 344]
    assert len(PatchedModel(pointwise).corners(400, 600)) == 12
    assert patch_starts(256, 256, 128) == [0]  # the code's duplicated corner is dropped
    with pytest.raises(ValueError, match="larger than the image"):
        patch_starts(200, 256, 128)


def test_one_patch_is_the_plain_model_call() -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(PatchedModel(pointwise, 16, 8)(x, T0), pointwise(x, T0))


@pytest.mark.parametrize("blend", ["average", "tent"])
def test_constant_image_stays_constant(blend: str) -> None:
    """Every pixel's merged value is a weighted mean of identical patch outputs: any wrong weight
    normalisation or uncovered pixel breaks the constant."""
    x = torch.full((1, 3, 40, 72), 0.37, dtype=torch.float64)
    out = PatchedModel(pointwise, 16, 8, blend)(x, T0)
    assert (out - pointwise(x, T0)).abs().max().item() < 1e-14


def test_ramp_has_no_jumps_at_patch_borders() -> None:
    """Horizontal ramp, non-square image, 16-patches with stride 8.

    Equivariant model: the merged output is the model's output on the ramp, so every first
    difference equals the ramp's (< 1e-12). Border-effect model (patches disagree by up to 0.1):
    with tent weights no first difference deviates from the slope by more than the model's own
    per-pixel variation 0.1 / 16 (measured 0.00625); GDP's plain average jumps by 0.044 where a
    patch starts or ends (why `blend: tent` exists).
    """
    h, w, p = 40, 72, 16
    ramp = torch.linspace(-1, 1, w, dtype=torch.float64).expand(1, 3, h, w).contiguous()
    slope = 2 / (w - 1)
    exact = PatchedModel(pointwise, p, 8)(ramp, T0)
    assert (exact - pointwise(ramp, T0)).abs().max().item() < 1e-12
    jumps = {blend: (PatchedModel(border_effect, p, 8, blend)(ramp, T0).diff(dim=-1) - slope).abs().max().item()
             for blend in ("tent", "average")}
    assert jumps["tent"] <= 0.1 / p + 1e-12
    assert jumps["average"] > 5 * 0.1 / p


def test_non_square_restoration_runs() -> None:
    """GDP low-light on a 48 x 64 image with a 32 x 32 network (patch 32, stride 16: 2 x 3 patches
    per step), set from the sampler's config parameters."""
    torch.manual_seed(0)
    net = create_model(**TINY_FLAGS).eval().requires_grad_(False)
    calls = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return net(x, t)

    op = build_operator("low_light", image_size=[48, 64], seed=0)
    y = build_operator("low_light", image_size=[48, 64], f_init=0.25, M_init=0.02)(
        torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1).detach()
    sampler = build_sampler("gdp", scale=80000.0, steps=3, patch_size=32, patch_stride=16)
    out = sampler.sample(model, op, y, shape=(1, 3, 48, 64), generator=torch.Generator().manual_seed(2))
    assert out.shape == (1, 3, 48, 64) and bool(out.isfinite().all())
    assert calls == [(32, 32)] * (3 * 6)
