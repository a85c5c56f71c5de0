"""GDP's blind exposure models for low-light enhancement and HDR (Fei et al. 2023).

In GDP's [0, 1] convention ``D(x01) = f * x01 + M`` with a scalar gain ``f`` and a single-channel
additive map ``M`` broadcast to RGB. Here both ends use the package's [-1, 1] convention:
``y = 2 (f (x + 1)/2 + M) - 1``. ``f`` and ``M`` are ``nn.Parameter``s (float64) so a sampler can
update them by gradient steps on the data loss, as GDP does at every guided step.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from operators.base import Operator, check_number, numpy_rng, pair


class ExposureModel(Operator):
    """Affine (not linear) ``(B, C, H, W) -> (B, C, H, W)``; ``M`` has shape ``(1, 1, H0, W0)``."""

    def __init__(self, f: float, M: np.ndarray) -> None:
        super().__init__()
        self.f = nn.Parameter(torch.tensor([float(f)], dtype=torch.float64))
        self.M = nn.Parameter(torch.as_tensor(np.asarray(M, dtype=np.float64))[None, None])

    def forward(self, x: Tensor, offset: Optional[tuple[int, int]] = None) -> Tensor:
        """A(x) on the whole image, which must have the ``M`` map's size (a 256 x 256 image is not
        a 400 x 600 low-light task), or on a patch (GDP's patch-based sampling) whose top-left
        pixel sits at ``offset`` in the ``M`` map."""
        h, w = x.shape[-2:]
        if offset is None and (h, w) != tuple(self.M.shape[-2:]):
            raise ValueError(f"the image is {h}x{w} but this exposure model's map is "
                             f"{self.M.shape[-2]}x{self.M.shape[-1]} (set the operator's image_size to the image's)")
        top, left = offset or (0, 0)
        if top < 0 or left < 0 or top + h > self.M.shape[-2] or left + w > self.M.shape[-1]:
            raise ValueError(f"patch {tuple(x.shape[-2:])} at {offset} is outside the M map {tuple(self.M.shape[-2:])}")
        m = self.M[..., top:top + h, left:left + w].to(device=x.device, dtype=x.dtype)
        f = self.f.to(device=x.device, dtype=x.dtype)
        return 2 * (f * (x + 1) / 2 + m) - 1


def _build(image_size: Union[int, Sequence[int]], f_init: Optional[float], M_init: Optional[float],
           seed: int) -> ExposureModel:
    size = pair(image_size, "image_size")
    rng = numpy_rng(seed)
    for name, value in (("f_init", f_init), ("M_init", M_init)):
        if value is not None:
            check_number(value, name)
    # GDP's initialisation: f = randn / 100, M = U(0, 1) / 10000 (per pixel).
    f = rng.standard_normal() / 100 if f_init is None else f_init
    M = rng.uniform(0, 1, size) / 10000 if M_init is None else np.full(size, float(M_init))
    return ExposureModel(f, M)


def build_low_light(image_size: Union[int, Sequence[int]] = (400, 600), f_init: Optional[float] = None,
                    M_init: Optional[float] = None, seed: int = 0) -> ExposureModel:
    """``low_light``: GDP LOL setting (400 x 600). ``f_init``/``M_init`` (a constant map, [0, 1]
    units) override GDP's random initialisation, e.g. to synthesise a dark image."""
    return _build(image_size, f_init, M_init, seed)


def build_hdr(image_size: Union[int, Sequence[int]] = (1060, 1900), f_init: Optional[float] = None,
              M_init: Optional[float] = None, seed: int = 0) -> ExposureModel:
    """``hdr``: GDP NTIRE HDR setting (1060 x 1900). GDP guides the short, medium and long LDR
    exposures in turn against this one shared ``(f, M)`` model, so a sampler sums three losses."""
    return _build(image_size, f_init, M_init, seed)
