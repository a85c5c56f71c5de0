"""Separable super-resolution operators: MATLAB-style antialiased bicubic (DPS ``Resizer``) and
block average pooling (DDRM/GDP ``sr4``), both as dense per-axis weight matrices.

A x = W_h x W_w^T with ``W`` of shape ``(ceil(n/s), n)`` built in float64. The true adjoint is
``W_h^T y W_w``; pinv and prox use the per-axis SVD ``W = U S V^T`` (V square): the eigenvectors
of A^T A are ``V_h (x) V_w`` with eigenvalues ``s_h,i^2 s_w,j^2`` (zero on the null space).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from operators.base import LinearOperator, Rho, pair, pinv_cutoff, positive_int, rho_view
from operators.svd import SeparableSVD, axis_svd, block_order, cached_svd, cast


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic with a = -0.5 (MATLAB ``imresize``)."""
    a = np.abs(t)
    return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1,
                    np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))


def bicubic_matrix(n: int, scale: float) -> np.ndarray:
    """``(ceil(n*scale), n)`` MATLAB imresize weights (antialiased when ``scale < 1``).

    Output pixel i (1-based) sits at input coordinate ``u = i/scale + 0.5 (1 - 1/scale)``; the
    downscaling kernel is ``scale * cubic(scale * t)`` of width ``4/scale``; rows are normalised
    and taps outside ``[0, n)`` are mirrored with the edge repeated (period ``2n``).
    """
    out = math.ceil(n * scale)
    width = 4.0 / scale if scale < 1 else 4.0
    u = np.arange(1, out + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]  # 1-based input indices
    t = u[:, None] - taps
    w = scale * cubic(scale * t) if scale < 1 else cubic(t)
    w = w / w.sum(axis=1, keepdims=True)
    j = (taps - 1).astype(np.int64) % (2 * n)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    matrix = np.zeros((out, n))
    np.add.at(matrix, (np.repeat(np.arange(out), w.shape[1]), j.ravel()), w.ravel())
    return matrix


def avgpool_matrix(n: int, factor: int) -> np.ndarray:
    """``(n/factor, n)`` block average: each output is the mean of ``factor`` consecutive inputs."""
    if n % factor:
        raise ValueError(f"avgpool super_resolution needs H and W divisible by scale_factor={factor}, got {n}")
    return np.kron(np.eye(n // factor), np.full((1, factor), 1.0 / factor))


def opencv_cubic_matrix(n: int, out: int) -> np.ndarray:
    """``(out, n)`` weights of OpenCV's ``resize(..., INTER_CUBIC)`` along one axis (float64).

    Output pixel i sits at input coordinate ``u = (i + 0.5) n / out - 0.5``; the four taps
    ``floor(u) - 1 .. floor(u) + 2`` get Keys cubic weights with a = -0.75 (OpenCV's, not MATLAB's
    -0.5), no antialiasing, and taps outside ``[0, n)`` are clamped to the border pixel. DiffPIR's
    SR start upsamples y this way (``cv2.resize``); OpenCV itself is not a dependency.
    """
    a = -0.75
    u = (np.arange(out) + 0.5) * (n / out) - 0.5
    left = np.floor(u)
    d = u - left
    weights = np.stack([((a * (d + 1) - 5 * a) * (d + 1) + 8 * a) * (d + 1) - 4 * a,
                        ((a + 2) * d - (a + 3)) * d * d + 1,
                        ((a + 2) * (1 - d) - (a + 3)) * (1 - d) * (1 - d) + 1], axis=1)
    weights = np.concatenate([weights, 1 - weights.sum(axis=1, keepdims=True)], axis=1)
    taps = np.clip(left[:, None] + np.arange(-1, 3)[None, :], 0, n - 1).astype(np.int64)
    matrix = np.zeros((out, n))
    np.add.at(matrix, (np.repeat(np.arange(out), 4), taps.ravel()), weights.ravel())
    return matrix


def bicubic_upsample(y: Tensor, factor: int) -> Tensor:
    """``(..., h, w) -> (..., factor h, factor w)``: OpenCV INTER_CUBIC upsampling, computed in
    float64 (OpenCV works in float32) and returned in y's dtype."""
    factor = positive_int(factor, "factor")
    h, w = y.shape[-2:]
    wh, ww = (torch.from_numpy(opencv_cubic_matrix(n, factor * n)).to(y.device) for n in (h, w))
    return (wh @ y.to(torch.float64) @ ww.T).to(y.dtype)


class AxisFactors(NamedTuple):
    """Per-axis factors as tensors: W ``(m, n)``, singular values padded to ``n``, full V ``(n, n)``,
    and W^+ ``(n, m)``."""

    w: Tensor
    s: Tensor
    v: Tensor
    pinv: Tensor


def axis_matrix(mode: str, n: int, factor: int) -> np.ndarray:
    """The ``(ceil(n / factor), n)`` float64 matrix of one axis."""
    return bicubic_matrix(n, 1.0 / factor) if mode == "bicubic" else avgpool_matrix(n, factor)


@lru_cache(maxsize=32)
def axis_factors(mode: str, n: int, factor: int, device: torch.device, dtype: torch.dtype) -> AxisFactors:
    """SVD of one axis's matrix in float64, cached per size/device/dtype so a sampling loop does
    not rebuild or re-upload it at every step."""
    w = axis_matrix(mode, n, factor)
    u, s, vt = np.linalg.svd(w, full_matrices=True)
    m = s.size
    keep = s > pinv_cutoff(dtype) * s.max()
    s_inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    pinv = vt[:m].T @ (s_inv[:, None] * u.T)  # W^+ = V S^+ U^T
    s_full = np.zeros(n)
    s_full[:m] = s
    return AxisFactors(*(torch.from_numpy(a).to(device=device, dtype=dtype) for a in (w, s_full, vt.T, pinv)))


@lru_cache(maxsize=32)
def axis_svd32(mode: str, n: int, factor: int) -> tuple[Tensor, Tensor, Tensor]:
    """The SVD form's per-axis factors: ``torch.svd`` of the float32 matrix, as DDRM's ``SRConv``
    computes them (``functions/svd_replacement.py:340``; its bicubic matrix equals ours exactly), so
    the V-space basis, where DDRM's noise lands, is the official one (a float64 SVD picks other
    signs and another null-space basis)."""
    return axis_svd(torch.from_numpy(axis_matrix(mode, n, factor)).float())


class SeparableResize(LinearOperator):
    """``super_resolution``: s-fold downscaling of ``(B, C, H, W)`` to ``(B, C, ceil(H/s), ceil(W/s))``."""

    def __init__(self, scale_factor: int = 4, mode: str = "bicubic",
                 image_size: Optional[Union[int, Sequence[int]]] = None) -> None:
        super().__init__()
        if mode not in ("bicubic", "avgpool"):
            raise ValueError(f"mode must be 'bicubic' or 'avgpool', got {mode!r}")
        self.scale_factor = positive_int(scale_factor, "scale_factor")
        self.mode = mode
        self.image_size = None if image_size is None else pair(image_size, "image_size")

    def _axis(self, n: int, like: Tensor) -> AxisFactors:
        return axis_factors(self.mode, n, self.scale_factor, like.device, like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        wh, ww = self._axis(x.shape[-2], x).w, self._axis(x.shape[-1], x).w
        return wh @ x @ ww.T

    def svd(self, shape: Sequence[int], device: Optional[torch.device] = None,
            dtype: torch.dtype = torch.float32) -> SeparableSVD:
        """SVD form for images of shape ``(..., C, H, W)`` (operators/svd.py), laid out as DDRM's
        ``SRConv``: each channel's measured ``ceil(H/s) x ceil(W/s)`` block first, channels interleaved.
        Factors in float32 (the official ones), cast to ``dtype``."""
        c, h, w = (int(v) for v in shape[-3:])

        def build() -> SeparableSVD:
            axes = [axis_svd32(self.mode, n, self.scale_factor) for n in (h, w)]
            order = block_order(axes[0][1], axes[1][1], h, w).to(device)
            return SeparableSVD(cast(axes[0], device, dtype), cast(axes[1], device, dtype), c, order)
        return cached_svd(self, (c, h, w, device, dtype), build)

    def _in_size(self, y: Tensor) -> tuple[int, int]:
        # Output sizes are ceil(n/s), so y alone does not fix n: use image_size, else n = s * m.
        if self.image_size is not None:
            return self.image_size
        return y.shape[-2] * self.scale_factor, y.shape[-1] * self.scale_factor

    def _adjoint(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        wh, ww = self._axis(size[0], y).w, self._axis(size[1], y).w
        return wh.T @ y @ ww

    def transpose(self, y: Tensor) -> Tensor:
        """A^T y = W_h^T y W_w for the input size ``image_size`` (default ``s`` times that of y)."""
        return self._adjoint(y, self._in_size(y))

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = W_h^+ y (W_w^+)^T from the per-axis SVD (cut-off ``pinv_cutoff``)."""
        n_h, n_w = self._in_size(y)
        ph, pw = self._axis(n_h, y).pinv, self._axis(n_w, y).pinv
        return ph @ y @ pw.T

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """Closed form: ``(V_h (x) V_w) diag(1/(s_h^2 s_w^2 + rho)) (V_h (x) V_w)^T (A^T y + rho z)``."""
        _, sh, vh, _ = self._axis(z.shape[-2], z)
        _, sw, vw, _ = self._axis(z.shape[-1], z)
        r = rho_view(rho, z)
        b = self._adjoint(y, (z.shape[-2], z.shape[-1])) + r * z
        coeff = vh.T @ b @ vw
        coeff = coeff / ((sh[:, None] * sw[None, :]) ** 2 + r)
        return vh @ coeff @ vw.T
