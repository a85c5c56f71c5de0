"""Convolution operators: DPS reflect-padded blur and DiffPIR circular blur (+ s-fold decimation).

Conventions follow the papers' code, which differ for asymmetric kernels:
* ``boundary="reflect"`` (DPS): ``ReflectionPad2d(k//2)`` then depthwise cross-correlation
  (``nn.Conv2d``). Exact adjoint: transposed convolution, then the reflected margins are folded
  back onto the pixels they copied. No closed-form prox: CG (base class).
* ``boundary="circular"`` (DiffPIR): true convolution with wrap-around, kernel centred at
  ``floor(k/2)`` (``scipy.ndimage.convolve(mode='wrap')`` / ``p2o``), optionally followed by
  keeping pixels ``[0::s, 0::s]``. prox is the closed form of Zhao et al. 2016 (FFT).
A rank-one (separable) kernel also gives an SVD form, with either boundary (``KernelOperator.svd``).
``pinv_threshold`` (None: off) counts singular values below it as zero in ``pinv`` and in the SVD form,
as the official DDRM/DDNM/RED-diff SVD operators do (``zero_threshold``): with noisy measurements the
exact pseudo-inverse divides the noise by singular values near 0. Forward, transpose and prox keep
every singular value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from operators.base import LinearOperator, Rho, check_number, numpy_rng, pinv_cutoff, positive_int, rho_view
from operators.fft import block_mean, circular_conv, p2o, upsample_zeros
from operators.kernels import (bicubic_sr_kernel, bicubic_table_kernel, gaussian_kernel, load_kernel,
                               motion_kernel, save_kernel, table_kernel, uniform_kernel)
from operators.svd import SeparableSVD, axis_svd, block_order, cached_svd, cast


class KernelOperator(LinearOperator):
    """Linear operator defined by a 2-D kernel (float64 buffer ``kernel``, saved in state_dict)."""

    def __init__(self, kernel: np.ndarray, pinv_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.as_tensor(np.asarray(kernel, dtype=np.float64)))
        self.pinv_threshold = None if pinv_threshold is None else check_number(pinv_threshold, "pinv_threshold", 0)

    def _kept(self, singulars: Tensor, dtype: torch.dtype) -> Tensor:
        """Mask of the singular values ``pinv`` inverts: above ``pinv_cutoff(dtype)`` times the
        largest and, with ``pinv_threshold``, at least the threshold."""
        keep = singulars > pinv_cutoff(dtype) * singulars.max()
        return keep if self.pinv_threshold is None else keep & (singulars >= self.pinv_threshold)

    def _kernel(self, like: Tensor) -> Tensor:
        return self.kernel.to(device=like.device, dtype=like.dtype)

    def save_kernel(self, path: Union[str, Path]) -> None:
        """Write the kernel to ``.npy``; ``kernel_path`` reloads it."""
        save_kernel(path, self.kernel.cpu().numpy())

    def axis_matrix(self, taps: np.ndarray, n: int) -> np.ndarray:
        """The matrix of one axis for a 1-D kernel ``taps`` (separable kernels)."""
        raise NotImplementedError

    def separable_taps(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """``(k_rows, k_cols)`` with ``kernel = outer(k_rows, k_cols)`` (rank one: second singular value
        at most ``SEPARABLE_RTOL`` of the first; both sum positive), else None."""
        u, s, vt = np.linalg.svd(self.kernel.cpu().numpy())
        if len(s) > 1 and s[1] > SEPARABLE_RTOL * s[0]:
            return None
        sign = 1.0 if u[:, 0].sum() >= 0 else -1.0
        return sign * np.sqrt(s[0]) * u[:, 0], sign * np.sqrt(s[0]) * vt[0]

    def svd_unavailable(self) -> Optional[str]:
        """Why there is no SVD form (None when the kernel is separable)."""
        if self.separable_taps() is None:
            return f"{self.name or type(self).__name__!r} has a kernel of rank > 1 (not separable): no SVD form"
        return None

    def svd(self, shape: Sequence[int], device: Optional[torch.device] = None,
            dtype: torch.dtype = torch.float32) -> SeparableSVD:
        """SVD form (operators/svd.py) of a separable kernel for images ``(..., C, H, W)``: per-axis
        SVDs in float64, each channel's coefficients by decreasing singular value, values below
        ``pinv_cutoff(dtype)`` times the largest (or below ``pinv_threshold``) left unmeasured."""
        c, h, w = (int(v) for v in shape[-3:])

        def build() -> SeparableSVD:
            taps = self.separable_taps()
            if taps is None:
                raise ValueError(self.svd_unavailable())
            axes = [axis_svd(torch.from_numpy(self.axis_matrix(k, n))) for k, n in zip(taps, (h, w))]
            products = (axes[0][1][:, None] * axes[1][1][None, :]).flatten()
            rank = int(self._kept(products, dtype).sum())
            order = block_order(axes[0][1], axes[1][1], h, w, by_value=True).to(device)
            return SeparableSVD(cast(axes[0], device, dtype), cast(axes[1], device, dtype), c, order, rank=rank)
        return cached_svd(self, (c, h, w, device, dtype), build)


SEPARABLE_RTOL = 1e-6  # float32-stored Gaussian kernels have rank-one residuals near 1e-8


def reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Source index of every pixel of an ``n``-long axis reflect-padded by ``pad`` (no edge repeat)."""
    i = torch.arange(-pad, n + pad, device=device)
    return torch.where(i < 0, -i, torch.where(i >= n, 2 * (n - 1) - i, i))


class ReflectConvolution(KernelOperator):
    """DPS blur: reflect pad then depthwise cross-correlation; ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, kernel: np.ndarray, pinv_threshold: Optional[float] = None) -> None:
        if any(k % 2 == 0 for k in np.shape(kernel)):
            raise ValueError(f"boundary 'reflect' needs an odd kernel size, got {np.shape(kernel)}")
        super().__init__(kernel, pinv_threshold)
        if self.pinv_threshold is not None and self.separable_taps() is None:
            raise ValueError("pinv_threshold with boundary 'reflect' needs a separable kernel (its SVD form); "
                             "use boundary 'circular'")

    def _pads(self, x: Tensor) -> tuple[int, int]:
        ph, pw = (k // 2 for k in self.kernel.shape)
        if ph >= x.shape[-2] or pw >= x.shape[-1]:
            raise ValueError(f"reflect padding {ph}x{pw} needs an image larger than the pad, got {tuple(x.shape[-2:])}")
        return ph, pw

    def axis_matrix(self, taps: np.ndarray, n: int) -> np.ndarray:
        """``(n, n)``: ``y_i = sum_t taps[t] x[r(i + t - k//2)]``, r the reflection without edge repeat."""
        k = len(taps)
        if k // 2 >= n:
            raise ValueError(f"reflect padding {k // 2} needs an image larger than the pad, got {n}")
        matrix = np.zeros((n, n))
        cols = reflect_index(n, k // 2, torch.device("cpu")).numpy()
        for t, tap in enumerate(taps):
            np.add.at(matrix, (np.arange(n), cols[np.arange(n) + t]), tap)
        return matrix

    def _weight(self, x: Tensor) -> Tensor:
        return self._kernel(x).expand(x.shape[1], 1, *self.kernel.shape)

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self._pads(x)
        # Same values as nn.ReflectionPad2d, written as a gather so the adjoint reuses the index map.
        x = x.index_select(-2, reflect_index(x.shape[-2], ph, x.device))
        x = x.index_select(-1, reflect_index(x.shape[-1], pw, x.device))
        return F.conv2d(x, self._weight(x), groups=x.shape[1])

    def transpose(self, y: Tensor) -> Tensor:
        ph, pw = self._pads(y)
        h, w = y.shape[-2:]
        z = F.conv_transpose2d(y, self._weight(y), groups=y.shape[1])
        # Adjoint of the reflect pad (a gather): scatter-add every padded pixel onto its source.
        z = z.new_zeros(*z.shape[:-1], w).index_add(-1, reflect_index(w, pw, y.device), z)
        return z.new_zeros(*z.shape[:-2], h, w).index_add(-2, reflect_index(h, ph, y.device), z)

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y: CG on the normal equation (base class); with ``pinv_threshold``, from the SVD form,
        whose singular values below the threshold are left out."""
        if self.pinv_threshold is None:
            return super().pinv(y)
        return self.svd(y.shape, y.device, y.dtype).pinv(y)


class CircularBlurDecimation(KernelOperator):
    """DiffPIR model ``y = (k * x)[0::s, 0::s]`` with circular convolution; ``s = 1`` is plain blur.

    Maps ``(B, C, H, W)`` to ``(B, C, H/s, W/s)``; H and W must be multiples of ``s``.
    """

    def __init__(self, kernel: np.ndarray, scale_factor: int = 1, pinv_threshold: Optional[float] = None) -> None:
        super().__init__(kernel, pinv_threshold)
        self.scale_factor = positive_int(scale_factor, "scale_factor")

    def axis_matrix(self, taps: np.ndarray, n: int) -> np.ndarray:
        """``(n / s, n)``: rows ``0::s`` of the circular convolution ``y_i = sum_t taps[t] x[(i - t + k//2) mod n]``."""
        if n % self.scale_factor:
            raise ValueError(f"image size {n} is not a multiple of scale_factor={self.scale_factor}")
        matrix = np.zeros((n, n))
        rows = np.arange(n)
        for t, tap in enumerate(taps):
            np.add.at(matrix, (rows, (rows - t + len(taps) // 2) % n), tap)
        return matrix[::self.scale_factor]

    def _otf(self, shape: tuple[int, int], like: Tensor) -> Tensor:
        s = self.scale_factor
        if shape[0] % s or shape[1] % s:
            raise ValueError(f"image size {shape} is not a multiple of scale_factor={s}")
        return p2o(self._kernel(like), shape)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale_factor
        return circular_conv(x, self._otf(tuple(x.shape[-2:]), x))[..., ::s, ::s]

    def transpose(self, y: Tensor) -> Tensor:
        s = self.scale_factor
        up = upsample_zeros(y, s)
        return circular_conv(up, self._otf(tuple(up.shape[-2:]), y).conj())

    def pinv(self, y: Tensor) -> Tensor:
        """A^T (A A^T)^+ y. A A^T is circular on the low-resolution grid with spectrum
        ``d = block_mean(|F k|^2)`` (squared singular values; cut-off ``pinv_cutoff``, and singular
        values below ``pinv_threshold`` when set). Computed in one pass in the Fourier domain,
        ``F x = conj(F k) tile_s(F y / d)``, so the large intermediate values of an ill-conditioned
        blur never go through an extra FFT."""
        s = self.scale_factor
        otf = self._otf((y.shape[-2] * s, y.shape[-1] * s), y)
        d = block_mean(otf.abs() ** 2, s)
        keep = d > pinv_cutoff(y.dtype) ** 2 * d.max()
        if self.pinv_threshold is not None:
            keep = keep & (d >= self.pinv_threshold ** 2)
        inv = torch.where(keep, 1 / torch.where(keep, d, torch.ones_like(d)), torch.zeros_like(d))
        return torch.fft.ifft2(otf.conj() * (torch.fft.fft2(y) * inv).repeat(1, 1, s, s)).real

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """Closed form of Zhao et al. 2016 (OPERATORS_EVAL.md 1.9), exact for circular boundary."""
        s = self.scale_factor
        alpha = rho_view(rho, z)
        fb = self._otf(tuple(z.shape[-2:]), z)
        fbc = fb.conj()
        fr = fbc * torch.fft.fft2(upsample_zeros(y, s)) + torch.fft.fft2(alpha * z)
        fbr = block_mean(fb * fr, s)
        inv_w = block_mean(fb.abs() ** 2, s)
        inv_wbr = fbr / (inv_w + alpha)
        return torch.fft.ifft2((fr - fbc * inv_wbr.repeat(1, 1, s, s)) / alpha).real


BOUNDARIES = ("reflect", "circular")


def _blur(kernel: np.ndarray, boundary: str, pinv_threshold: Optional[float] = None) -> KernelOperator:
    """The blur of ``boundary``; ``pinv_threshold`` (>= 0 or None): singular values below it count as
    zero in ``pinv`` and the SVD form (module docstring)."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if boundary == "reflect":
        return ReflectConvolution(kernel, pinv_threshold=pinv_threshold)
    return CircularBlurDecimation(kernel, pinv_threshold=pinv_threshold)


def build_gaussian_blur(kernel_size: int = 61, intensity: float = 3.0, boundary: str = "reflect",
                        pinv_threshold: Optional[float] = None) -> KernelOperator:
    """``gaussian_blur``: DPS kernel (std = ``intensity``, truncate 4)."""
    positive_int(kernel_size, "kernel_size")
    kernel = gaussian_kernel(kernel_size, check_number(intensity, "intensity", 0, open_low=True))
    return _blur(kernel, boundary, pinv_threshold)


def build_uniform_blur(kernel_size: int = 9, boundary: str = "reflect",
                       pinv_threshold: Optional[float] = None) -> KernelOperator:
    """``uniform_blur``: box kernel of side ``kernel_size``."""
    return _blur(uniform_kernel(positive_int(kernel_size, "kernel_size")), boundary, pinv_threshold)


def given_kernel(kernel_path: Optional[str], kernel_table: Optional[str],
                 kernel_index: Optional[int]) -> Optional[np.ndarray]:
    """The kernel a user names explicitly: a ``.npy`` file or an official table entry (at most one)."""
    if kernel_table is None and kernel_index is not None:
        raise ValueError("kernel_index needs kernel_table (bicubicx234, kernels_12 or levin09)")
    if kernel_table is not None:
        if kernel_path is not None:
            raise ValueError("give kernel_path or kernel_table, not both")
        return table_kernel(kernel_table, 0 if kernel_index is None else kernel_index)
    return None if kernel_path is None else load_kernel(kernel_path)


def build_motion_blur(kernel_size: int = 61, intensity: float = 0.5, boundary: str = "reflect",
                      seed: int = 0, generator: Optional[np.random.Generator] = None,
                      kernel_path: Optional[str] = None, kernel_table: Optional[str] = None,
                      kernel_index: Optional[int] = None, pinv_threshold: Optional[float] = None) -> KernelOperator:
    """``motion_blur``: random-trajectory kernel from ``generator`` (else ``seed``), or a given
    kernel: ``kernel_path`` (.npy) or ``kernel_table`` / ``kernel_index`` (e.g. levin09, 0..7);
    then size/intensity/seed are unused."""
    kernel = given_kernel(kernel_path, kernel_table, kernel_index)
    if kernel is not None:
        return _blur(kernel, boundary, pinv_threshold)
    positive_int(kernel_size, "kernel_size")
    intensity = check_number(intensity, "intensity", 0, 1)
    return _blur(motion_kernel(kernel_size, intensity, numpy_rng(seed, generator)), boundary, pinv_threshold)


SR_KERNELS = ("bicubic_table", "bicubic_sr_kernel")


def build_sr_blur_decimation(scale_factor: int = 4, kernel: str = "bicubic_table", kernel_path: Optional[str] = None,
                             kernel_table: Optional[str] = None,
                             kernel_index: Optional[int] = None) -> CircularBlurDecimation:
    """``sr_blur_decimation``: DiffPIR SR model. Kernel: ``kernel_path`` (.npy) or ``kernel_table`` /
    ``kernel_index`` when given, else ``kernel``: ``bicubic_table`` (DiffPIR's, the table entry
    ``scale_factor - 2``; factors 2, 3, 4) or ``bicubic_sr_kernel`` (analytic, any factor)."""
    positive_int(scale_factor, "scale_factor")
    if kernel not in SR_KERNELS:
        raise ValueError(f"kernel must be one of {SR_KERNELS}, got {kernel!r}")
    chosen = given_kernel(kernel_path, kernel_table, kernel_index)
    if chosen is None:
        chosen = bicubic_table_kernel(scale_factor) if kernel == "bicubic_table" else bicubic_sr_kernel(scale_factor)
    return CircularBlurDecimation(chosen, scale_factor)
