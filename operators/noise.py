"""Measurement noise on the [-1, 1] scale; randomness only from an explicit ``torch.Generator``.

Unit convention: ``sigma`` is a standard deviation on [-1, 1] (DPS: 0.05). Configs written in
[0, 255] units (DiffPIR's ``noise_level_img = 12.75/255``, a std on [0, 1]) convert once with
:func:`sigma_from_255`: ``sigma_from_255(12.75) == 0.1``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from operators.base import check_number


def sigma_from_255(level: float) -> float:
    """Std ``level`` in [0, 255] units (``level / 255`` on [0, 1]) -> std on [-1, 1] (``2 level / 255``)."""
    return 2.0 * float(level) / 255.0


def _on(generator: torch.Generator, y: Tensor, draw: Callable[[torch.device], Tensor]) -> Tensor:
    """Draw on the generator's device (torch requires it) and move the result next to ``y``."""
    if not isinstance(generator, torch.Generator):
        raise TypeError("noise needs an explicit torch.Generator (generator=...)")
    return draw(generator.device).to(y.device)


class GaussianNoise:
    """``y + sigma n``, ``n ~ N(0, I)``; give ``sigma`` ([-1, 1] scale, default 0.05) or
    ``sigma_255`` ([0, 255] scale, converted by :func:`sigma_from_255`), not both."""

    def __init__(self, sigma: Optional[float] = None, sigma_255: Optional[float] = None) -> None:
        if sigma is not None and sigma_255 is not None:
            raise ValueError("give either sigma ([-1, 1] scale) or sigma_255 ([0, 255] scale), not both")
        name, value = ("sigma_255", sigma_255) if sigma_255 is not None else ("sigma", 0.05 if sigma is None else sigma)
        value = check_number(value, name, 0)
        self.sigma = sigma_from_255(value) if name == "sigma_255" else value

    def __call__(self, y: Tensor, *, generator: torch.Generator) -> Tensor:
        n = _on(generator, y, lambda d: torch.randn(y.shape, generator=generator, device=d, dtype=y.dtype))
        return y + self.sigma * n


class PoissonNoise:
    """DPS ``poisson``: ``y01 = Poisson(255 rate clamp((y+1)/2, 0, 1)) / (255 rate)``, returned as
    ``clamp(2 y01 - 1, -1, 1)``."""

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = check_number(rate, "rate", 0, open_low=True)

    def __call__(self, y: Tensor, *, generator: torch.Generator) -> Tensor:
        lam = 255.0 * self.rate * ((y.detach() + 1) / 2).clamp(0, 1)
        counts = _on(generator, y, lambda d: torch.poisson(lam.to(d), generator=generator))
        return (2 * counts / (255.0 * self.rate) - 1).clamp(-1, 1)


class NoNoise:
    """``clean`` (DPS's name): returns ``y`` unchanged."""

    def __call__(self, y: Tensor, *, generator: torch.Generator) -> Tensor:
        return y
