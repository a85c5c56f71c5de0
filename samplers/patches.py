"""Any-size restoration: a fixed-size model run on overlapping patches, merged into one output.

GDP (Fei et al. 2023, code `gaussian_diffusion_x0_enhancement_{direct,HDR}.py`) restores 400x600
(LOL) and 1060x1900 (HDR) images with a 256x256 ADM model: at every step it crops 256x256
patches of x_t at corners `range(0, H - 256 + 1, 128) + [H - 256]` (likewise for W), runs the
model on each and averages the overlapping results with equal weights. `PatchedModel` does this
for the model call itself, so it wraps any `model(x_t, t)` and every sampler can use it: the
sampler sees one full-size eps (and learned-variance channels) as if the model were size-free.

Which samplers it suits: any whose measurement step acts on the full image, because the operator
is applied globally to the merged x0_hat: GDP (its guidance is pixelwise for low-light/HDR, and
global for SR/blur), DiffPIR (its prox needs the full-image operator: the FFT closed forms and the
inpainting/colorization formulas work at any size), DDPM/DDIM. DPS and DPPS also run, and their
gradient flows back through every patch call (memory grows with the number of patches).

Paper/code vs here: GDP merges mu, log-variance and x0_hat (each computed from its own clipped
x0_hat) after guiding each patch; merging the model output instead is the same except where x0_hat
exceeds [-1, 1] in some patches and not in others (the clamp is applied after merging). The GDP
sampler follows the code's per-patch rule by default (`samplers/gdp.py`, `patch_rule`), using
`windows` and `coverage`; the merged call here is its `patch_rule: merged` and every other sampler's. The code keeps a duplicated last
corner when (H - 256) is a multiple of 128 (a 256-pixel side gives corners [0, 0]), counting that
patch twice; duplicates are dropped here.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import torch

from guided_diffusion.diffusion import Model

BLENDS = ("average", "tent")


def patch_starts(length: int, patch: int, stride: int) -> List[int]:
    """Start offsets along one axis: GDP's `range(0, length - patch + 1, stride) + [length - patch]`,
    without duplicates, so the last patch sits flush with the border."""
    if patch > length:
        raise ValueError(f"patch size {patch} is larger than the image side {length}")
    if stride < 1:
        raise ValueError(f"patch stride must be >= 1, got {stride}")
    return sorted(set(range(0, length - patch + 1, stride)) | {length - patch})


def blend_weights(patch: int, blend: str, like: torch.Tensor) -> torch.Tensor:
    """(1, 1, patch, patch) merge weights of one patch: all ones ("average", GDP's uniform
    averaging) or a separable tent min(i + 1, patch - i) that fades towards the patch border, so a
    patch's border pixels barely count where another patch covers them ("tent")."""
    if blend == "average":
        w = torch.ones(patch, dtype=like.dtype, device=like.device)
    elif blend == "tent":
        i = torch.arange(patch, dtype=like.dtype, device=like.device)
        w = torch.minimum(i + 1, patch - i)
    else:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    return (w[:, None] * w[None, :])[None, None]


class PatchedModel:
    """`model(x_t, t)` for x_t of any size (B, C, H, W) with H, W >= patch_size.

    Each patch_size x patch_size crop at the corners of `patch_starts` goes through `model` (one
    call per patch, in the order GDP visits them); the outputs (B, C or 2C, p, p) are summed with
    `blend_weights` and divided by the summed weights. An image of exactly the model's size is
    one patch, i.e. the plain model call. Differentiable (DPS can backpropagate through it).
    """

    def __init__(self, model: Model, patch_size: int = 256, stride: int = 128, blend: str = "average"):
        if blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
        self.model, self.patch_size, self.stride, self.blend = model, int(patch_size), int(stride), blend

    def corners(self, height: int, width: int) -> List[Tuple[int, int]]:
        """(top, left) of every patch, rows first as in GDP."""
        return [(top, left) for top in patch_starts(height, self.patch_size, self.stride)
                for left in patch_starts(width, self.patch_size, self.stride)]

    def windows(self, height: int, width: int) -> List[Tuple[Tuple[int, int], Tuple[Any, slice, slice]]]:
        """((top, left), index) of every patch; `x[index]` is the patch of a (..., H, W) tensor."""
        p = self.patch_size
        return [((top, left), (..., slice(top, top + p), slice(left, left + p)))
                for top, left in self.corners(height, width)]

    def coverage(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """(1, 1, H, W): how many patches cover each pixel (what GDP divides its sums by)."""
        count = like.new_zeros(1, 1, height, width)
        for _, index in self.windows(height, width):
            count[index] += 1
        return count

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        height, width = x_t.shape[-2:]
        weight = blend_weights(p, self.blend, x_t)
        total = x_t.new_zeros(1, 1, height, width)
        merged = None
        for top, left in self.corners(height, width):
            out = self.model(x_t[..., top:top + p, left:left + p], t)
            if merged is None:
                merged = x_t.new_zeros(x_t.shape[0], out.shape[1], height, width)
            merged[..., top:top + p, left:left + p] += weight * out
            total[..., top:top + p, left:left + p] += weight
        return merged / total


def model_window(model: Model, height: int, width: int) -> Tuple[int, int]:
    """The (h, w) that one call of `model` sees for an (H, W) image: the patch for a
    `PatchedModel`, else the whole image."""
    if isinstance(model, PatchedModel):
        return model.patch_size, model.patch_size
    return height, width
