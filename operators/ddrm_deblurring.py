"""``ddrm_deblurring``: the operator that the official DDRM, DDNM and RED-diff codes build for
``--deg deblur_gauss``, reproduced exactly. **It is not a blur.**

Official: DDRM ``runners/diffusion.py:246-251`` with class ``Deblurring`` of
``functions/svd_replacement.py:396-464``; DDNM ``guided_diffusion/diffusion.py:504-509`` (class
``Deblurring`` of ``functions/svd_operators.py``); NVlabs/RED-diff ``utils/degredations.py`` L432-504,
built at L741-746 (kernel sigma 25 there). Construction (golden README, "The DDRM-family Gaussian
deblurring operator is not a blur"):
1. ``k`` = ``exp(-0.5 (x / sigma)^2)`` at ``x = -2..2`` in float32, divided by its sum (``kernel_1d``);
2. ``H_small[i, j] = k[j - i + 2]`` for ``j in range(i - 2, i + 2)`` inside the image: the range end is
   exclusive, so only the first 4 of the 5 taps are used (zero boundary);
3. ``torch.svd(H_small)`` in float32; 1-D singular values below ``zero_threshold`` (0.03) set to 0;
4. the 2-D values ``s_a s_b`` sorted descending (``torch.sort``, not stable: the order of equal
   products depends on the platform, so the permutation ``perm`` is a buffer that can be loaded);
5. V-space: per channel ``T_c = V^T X_c V`` in ``perm`` order, channels interleaved (entry ``3q + c``),
   but ``singulars()`` **tiles** the sorted values (entry ``m`` gets ``s_sorted[m mod HW]``) instead of
   interleaving them (``s_sorted[q]``).
So ``H(x) = U(s * Vt(x))`` scales channel c's coefficient q by the singular value of another
coefficient: on the golden image ``H(x)`` differs from the 4-tap separable blur by 0.226 (max abs),
from which the zeroed values alone account for 0.003. A measurement made by a real blur is
inconsistent with it, and restoring a real blurred photo with these codes inverts the wrong operator.
Why noisy deblurring in those codes goes wrong: with sigma_y > 0, (a) DDRM's sampler treats the
zeroed singular values (2 of 32 per axis: 124 per channel, 372 of 3072 entries at 32 x 32) as measured
entries less noisy than y at every step and pulls them towards ``Ut(y) / sigma_y`` there, which is
pure measurement noise, the same at every step; (b) ``pinv`` and DDRM's "before" entries divide by
the mismatched singular values, down to ``0.03^2``, so the noise of a measurement that does not come
from this very H is amplified where the tiled value is small. Published DDRM/DDNM/RED-diff
"Gaussian deblurring" numbers can only be reproduced with this operator, and only measure it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from operators.base import LinearOperator, Rho, check_number, positive_int
from operators.svd import SeparableSVD, axis_svd, cached_svd, cast


def ddrm_gaussian_kernel(kernel_size: int = 5, kernel_sigma: float = 10.0) -> Tensor:
    """The official float32 kernel: ``pdf(x) = exp(-0.5 (x / sigma)^2)`` at ``x = -(k//2) .. k//2``
    (exponent in Python floats, ``exp`` in float32), divided by its float32 sum (DDRM sigma 10)."""
    r = kernel_size // 2
    kernel = torch.exp(torch.tensor([-0.5 * (x / kernel_sigma) ** 2 for x in range(-r, r + 1)], dtype=torch.float32))
    return kernel / kernel.sum()


def ddrm_axis_matrix(kernel: Tensor, n: int) -> Tensor:
    """``H_small`` (n, n), float32: row i holds ``kernel[j - i + k//2]`` at ``j = i - k//2 .. i + k//2 - 1``
    inside ``[0, n)`` (the official loop's exclusive range end drops the last tap)."""
    r = len(kernel) // 2
    h = torch.zeros(n, n, dtype=torch.float32)
    for i in range(n):
        for j in range(max(i - r, 0), min(i + r, n)):
            h[i, j] = kernel[j - i + r]
    return h


class DDRMDeblurring(LinearOperator):
    """``ddrm_deblurring`` on ``(B, C, S, S)`` images, ``S = image_size``; the measurement has the image
    shape. Not a blur: see the module docstring. Buffers (float64 copies of the official float32
    values, ``state_dict``): ``kernel_1d``, ``u_small``, ``s_small`` (thresholded), ``v_small``, ``perm``."""

    def __init__(self, kernel_1d: Optional[Sequence[float]] = None, image_size: int = 256,
                 zero_threshold: float = 0.03, kernel_size: Optional[int] = None,
                 kernel_sigma: Optional[float] = None) -> None:
        super().__init__()
        self.image_size = positive_int(image_size, "image_size")
        threshold = check_number(zero_threshold, "zero_threshold", 0)
        if kernel_1d is not None:
            if kernel_size is not None or kernel_sigma is not None:
                raise ValueError("give either kernel_1d or kernel_size/kernel_sigma, not both")
            values = list(kernel_1d) if isinstance(kernel_1d, (list, tuple)) else []
            if len(values) % 2 == 0 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ValueError(f"kernel_1d must be an odd-length list of finite numbers, got {kernel_1d!r}")
            kernel = torch.tensor(values, dtype=torch.float32)
        else:
            size = positive_int(5 if kernel_size is None else kernel_size, "kernel_size")
            kernel = ddrm_gaussian_kernel(size, check_number(10.0 if kernel_sigma is None else kernel_sigma,
                                                             "kernel_sigma", 0, open_low=True))
        u, s, v = axis_svd(ddrm_axis_matrix(kernel, self.image_size))
        s = torch.where(s < threshold, torch.zeros_like(s), s)
        perm = torch.sort((s[:, None] * s[None, :]).flatten(), descending=True).indices
        for name, value in (("kernel_1d", kernel), ("u_small", u), ("s_small", s), ("v_small", v)):
            self.register_buffer(name, value.to(torch.float64))
        self.register_buffer("perm", perm)

    def svd(self, shape: Sequence[int], device: Optional[torch.device] = None,
            dtype: torch.dtype = torch.float32) -> SeparableSVD:
        """The official factors (operators/svd.py layout) for ``(..., C, S, S)`` images, tiled singulars."""
        c, h, w = (int(v) for v in shape[-3:])
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"ddrm_deblurring was built for {self.image_size}x{self.image_size} images, got {h}x{w}")

        def build() -> SeparableSVD:
            axis = cast((self.u_small, self.s_small, self.v_small), device, dtype)
            return SeparableSVD(axis, axis, c, self.perm.to(device), tiled=True)
        return cached_svd(self, (c, device, dtype), build)

    def _svd(self, like: Tensor) -> SeparableSVD:
        return self.svd(like.shape, like.device, like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """The official ``H(x) = U(s * Vt(x))`` (not a convolution)."""
        return self._svd(x).forward(x)

    def transpose(self, y: Tensor) -> Tensor:
        return self._svd(y).transpose(y)

    def pinv(self, y: Tensor) -> Tensor:
        """The official ``H_pinv``: ``V(Ut(y) / s)``, 0 where s = 0."""
        return self._svd(y).pinv(y)

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """Closed form in the SVD basis."""
        return self._svd(z).prox(z, y, rho)
