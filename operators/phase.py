"""Phase retrieval (DPS): ``y = |F_c(pad(x))|`` per channel, nonlinear."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from operators.base import Operator, check_number


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two axes (fastMRI ``fft2c_new``)."""
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


class PhaseRetrieval(Operator):
    """``(B, C, H, W) -> (B, C, H + 2 p_h, W + 2 p_w)`` Fourier magnitudes, ``p = int(oversample/8 n)``
    zeros per side (64 for 256 px at the DPS default 2.0). No transpose/pinv/prox."""

    def __init__(self, oversample: float = 2.0) -> None:
        super().__init__()
        self.oversample = check_number(oversample, "oversample", 0)

    def forward(self, x: Tensor) -> Tensor:
        ph = int(self.oversample / 8 * x.shape[-2])
        pw = int(self.oversample / 8 * x.shape[-1])
        return fft2c(F.pad(x, (pw, pw, ph, ph))).abs()

    def visualize(self, y: Tensor) -> Tensor:
        """``log(1 + y / (0.1 mean|y|))`` divided by its per-image maximum, in [0, 1].

        Magnitudes span many decades (the DC term dominates); the log with a scale tied to the
        mean magnitude keeps the spectrum visible. Noise can make y negative: clamped to 0 first.
        """
        tiny = torch.finfo(y.dtype).tiny
        y = y.clamp_min(0)
        v = torch.log1p(y / (0.1 * y.mean(dim=(1, 2, 3), keepdim=True)).clamp_min(tiny))
        return v / v.amax(dim=(1, 2, 3), keepdim=True).clamp_min(tiny)
