"""FFT helpers for circular convolution (DiffPIR convention) and s-fold decimation.

``p2o`` follows DiffPIR/USRNet: the kernel is zero-padded to the image size at the top-left and
rolled by ``-floor(k/2)`` per axis, so multiplying spectra is a true (unflipped) convolution
centred at ``floor(k/2)``. Kernels larger than the image are wrapped (folded) modulo the size,
which is what circular convolution with such a kernel means.
"""

from __future__ import annotations

import torch
from torch import Tensor


def p2o(kernel: Tensor, shape: tuple[int, int]) -> Tensor:
    """Optical transfer function ``(H, W)`` (complex) of a ``(kh, kw)`` kernel for an ``H x W`` image."""
    kh, kw = kernel.shape
    h, w = shape
    rows = (torch.arange(kh, device=kernel.device) - kh // 2) % h
    cols = (torch.arange(kw, device=kernel.device) - kw // 2) % w
    padded = kernel.new_zeros(h, w)
    padded = padded.index_put((rows[:, None].expand(kh, kw), cols[None, :].expand(kh, kw)), kernel,
                              accumulate=True)
    return torch.fft.fft2(padded)


def circular_conv(x: Tensor, otf: Tensor) -> Tensor:
    """Circular convolution of real ``(..., H, W)`` ``x`` with a kernel given by its OTF."""
    return torch.fft.ifft2(torch.fft.fft2(x) * otf).real


def block_mean(spectrum: Tensor, s: int) -> Tensor:
    """Average the ``s x s`` contiguous blocks of an ``(..., H, W)`` spectrum -> ``(..., H/s, W/s)``.

    This is the spectrum of s-fold decimation (aliasing sums the s^2 shifted copies).
    """
    *lead, h, w = spectrum.shape
    blocks = spectrum.reshape(*lead, s, h // s, s, w // s)
    return blocks.mean(dim=(-4, -2))


def upsample_zeros(y: Tensor, s: int) -> Tensor:
    """Adjoint of ``x[..., ::s, ::s]``: put ``y`` at pixels ``[0::s, 0::s]`` of a zero image."""
    *lead, h, w = y.shape
    out = y.new_zeros(*lead, h * s, w * s)
    out[..., ::s, ::s] = y
    return out
