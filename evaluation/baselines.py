"""Classical restorations that a diffusion prior has to beat: bicubic upsampling for bicubic
super-resolution, harmonic inpainting for masks and Wiener deconvolution (a Gaussian gradient
prior) for circular blur. All see the same measurement y as the samplers and use no prior beyond
smoothness.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from operators.blur import CircularBlurDecimation
from operators.fft import p2o
from operators.inpainting import Inpainting
from operators.resize import SeparableResize, bicubic_matrix

# Std of the image gradients assumed by the Wiener prior, on the [-1, 1] scale: picked on the 4
# validation crops of data/demo_val (configs/demo/SWEEPS.md), never on the test crops.
GRADIENT_STD = 0.4
# Noise std below which y is treated as noiseless; it keeps the deconvolution's weight positive.
NOISE_FLOOR = 1e-3


def bicubic_upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, factor h, factor w) by MATLAB-style bicubic interpolation (Keys cubic,
    a = -0.5, mirrored borders): the upscaling counterpart of the `super_resolution` operator."""
    h, w = y.shape[-2:]
    w_h = torch.from_numpy(bicubic_matrix(h, float(factor))).to(y)
    w_w = torch.from_numpy(bicubic_matrix(w, float(factor))).to(y)
    return w_h @ y @ w_w.T


def _grid_laplacian(h: int, w: int) -> sp.csr_matrix:
    """The 4-neighbour graph Laplacian of an h x w pixel grid (degree minus adjacency), i.e. the
    negative discrete Laplacian with reflecting (Neumann) borders."""
    def path(n: int) -> sp.csr_matrix:
        ones = np.ones(n - 1)
        adjacency = sp.diags([ones, ones], [-1, 1], shape=(n, n))
        return sp.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency
    return (sp.kron(path(h), sp.identity(w)) + sp.kron(sp.identity(h), path(w))).tocsr()


def harmonic_inpaint(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the pixels where mask == 0 with the harmonic interpolant of the observed ones.

    y: (N, C, H, W); mask: (H, W) or broadcastable (1 = observed). The unknown pixels u solve
    L_uu u = -L_uk y_k with L the grid Laplacian (`_grid_laplacian`): each unknown pixel is the
    mean of its neighbours, the minimiser of the Dirichlet energy. Observed pixels keep y.
    """
    h, w = y.shape[-2:]
    known = mask.reshape(-1, h, w)[0].reshape(-1).cpu().numpy() > 0.5
    if known.all():
        return y.clone()
    if not known.any():
        raise ValueError("harmonic inpainting needs at least one observed pixel")
    lap = _grid_laplacian(h, w)
    solve = spla.splu(lap[~known][:, ~known].tocsc()).solve
    coupling = lap[~known][:, known]
    flat = y.detach().reshape(-1, h * w).double().cpu().numpy()
    out = flat.copy()
    for row in range(flat.shape[0]):
        out[row, ~known] = solve(-(coupling @ flat[row, known]))
    return torch.from_numpy(out).to(y).reshape(y.shape)


def noise_std(y: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N,): each image's white-noise std, estimated from y alone as the median
    absolute finest diagonal Haar detail / 0.6745 (Donoho's MAD estimator; the detail
    (a - b - c + d) / 2 of iid N(0, s^2) noise is N(0, s^2)). A blurred image keeps little signal
    in that band: 0.006-0.008 for the noiseless std-1.5 blurs of the data/demo_val crops, which adds
    under 2 % to a noise std of 0.05 (the two add in quadrature)."""
    h, w = (d - d % 2 for d in y.shape[-2:])
    z = y[..., :h, :w]
    detail = (z[..., 0::2, 0::2] - z[..., 1::2, 0::2] - z[..., 0::2, 1::2] + z[..., 1::2, 1::2]) / 2
    return detail.flatten(1).abs().median(dim=1).values / 0.6745


def wiener_deconvolve(op: CircularBlurDecimation, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """argmin_x ||y - k * x||^2 + weight ||grad x||^2 for circular blur, in closed form.

    y: (N, C, H, W); weight: (N,) > 0. grad x: the circular forward differences along both axes,
    so in Fourier X = conj(K) Y / (|K|^2 + weight (|D_h|^2 + |D_v|^2)), D = 1 - exp(-2 pi i f).
    """
    h, w = y.shape[-2:]
    otf = p2o(op.kernel.to(y), (h, w))
    freq_h = torch.fft.fftfreq(h, dtype=y.dtype, device=y.device)[:, None]
    freq_w = torch.fft.fftfreq(w, dtype=y.dtype, device=y.device)[None, :]
    # |1 - exp(-2 pi i f)|^2 = 4 sin^2(pi f)
    laplace = 4 * torch.sin(math.pi * freq_h) ** 2 + 4 * torch.sin(math.pi * freq_w) ** 2
    denominator = otf.abs() ** 2 + weight.to(y).reshape(-1, 1, 1, 1) * laplace
    return torch.fft.ifft2(otf.conj() * torch.fft.fft2(y) / denominator).real


def wiener_restore(op: CircularBlurDecimation, y: torch.Tensor, gradient_std: float = GRADIENT_STD) -> torch.Tensor:
    """Wiener deconvolution of y (N, C, H, W) in [-1, 1]: the MAP estimate under white noise of the
    std estimated from y (`noise_std`, at least NOISE_FLOOR) and a Gaussian prior on the image
    gradients of std `gradient_std`, i.e. `wiener_deconvolve` with weight (sigma / gradient_std)^2."""
    sigma = noise_std(y).clamp_min(NOISE_FLOOR)
    return wiener_deconvolve(op, y, (sigma / gradient_std) ** 2)


def classical_method(op: Any) -> str:
    """The classical counterpart of an operator: "bicubic", "harmonic" or "wiener"; ValueError for others."""
    if isinstance(op, SeparableResize) and op.mode == "bicubic":
        return "bicubic"
    if isinstance(op, Inpainting):
        return "harmonic"
    if isinstance(op, CircularBlurDecimation) and op.scale_factor == 1:
        return "wiener"
    raise ValueError(f"no classical baseline for operator {getattr(op, 'name', type(op).__name__)!r} "
                     f"(bicubic super_resolution, inpainting and circular-boundary blur have one)")


def classical_restore(op: Any, y: torch.Tensor, **params: Any) -> torch.Tensor:
    """The `classical_method(op)` restoration of measurements y: (N, C, H, W) in [-1, 1]. `params`
    go to the method (wiener: gradient_std; bicubic and harmonic take none)."""
    method = classical_method(op)
    if method == "bicubic":
        return bicubic_upsample(y, op.scale_factor, **params)
    if method == "harmonic":
        return harmonic_inpaint(y, op.mask, **params)
    return wiener_restore(op, y, **params)
