"""Full-reference pixel metrics on 8-bit images: PSNR and SSIM.

Inputs are `(B, C, H, W)` uint8 tensors (the PNGs as written). Both metrics work on RGB scaled to
[0, 1] (value / 255, data range 1) in float64, per image; callers average over images. This is the
DPS protocol (skimage on `plt.imread` floats) and equals DiffPIR's and GDP's uint8 / MAX-255 PSNR.
"""
from __future__ import annotations

import torch
from torch import Tensor

# SSIM of Wang et al. 2004 as in its MATLAB reference code (and GDP's pytorch-ignite / DiffPIR's
# unused function): 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" filtering.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def to_unit(images: Tensor, crop_border: int = 0) -> Tensor:
    """uint8 (B, C, H, W) -> float64 in [0, 1], with `crop_border` pixels removed on every side
    (DiffPIR and GDP crop the scale factor, 4, for SR)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
    if crop_border:
        images = images[..., crop_border:-crop_border, crop_border:-crop_border]
    return images.double() / 255


def psnr(recon: Tensor, label: Tensor, crop_border: int = 0) -> Tensor:
    """(B,) PSNR in dB = 10 log10(1 / MSE) over all pixels and channels of each image, on [0, 1].

    Identical images give +inf.
    """
    mse = (to_unit(recon, crop_border) - to_unit(label, crop_border)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def gaussian_taps(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """(size,) float64 1-D Gaussian weights summing to 1; the 2-D window is their outer product."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_filter_valid(t: Tensor, taps: Tensor) -> Tensor:
    """Separable "valid" filtering of (..., H, W) -> (..., H - n + 1, W - n + 1) as n shifted sums per
    axis: exact in float64 and light on memory (torch's float64 conv2d unfolds the whole image)."""
    n = len(taps)
    h, w = t.shape[-2] - n + 1, t.shape[-1] - n + 1
    rows = sum(taps[k] * t[..., k:k + h, :] for k in range(n))
    return sum(taps[k] * rows[..., k:k + w] for k in range(n))


def ssim(recon: Tensor, label: Tensor, crop_border: int = 0) -> Tensor:
    """(B,) mean SSIM: the SSIM map of each RGB channel separately ("valid" region, so (H-10) x (W-10)
    values), averaged over the map and the channels. Population (biased) local variances, data range 1.
    Equals skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)`.
    """
    x, y = to_unit(recon, crop_border), to_unit(label, crop_border)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(x.shape[-2:])}")
    taps = gaussian_taps().to(x.device)

    def blur(t: Tensor) -> Tensor:
        return gaussian_filter_valid(t, taps)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    smap = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return smap.flatten(1).mean(1)

