"""Operator protocol shared by every degradation model.

Images are ``(B, C, H, W)`` tensors in ``[-1, 1]`` on any device and dtype. Operators are
``torch.nn.Module`` objects so their random state (masks, kernels) and learnable degradation
parameters (GDP's f, M) live in ``state_dict()`` and can be saved with :meth:`Operator.save`.
Fixed buffers are stored in float64 and cast to the input's device/dtype at every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from guided_diffusion.files import atomic_write
from operators.linalg import conjugate_gradient

Rho = Union[float, Tensor]


def pinv_cutoff(dtype: torch.dtype) -> float:
    """Relative cut-off of closed-form pseudo-inverses: singular values below ``cutoff * max``
    count as zero. ``1000 eps`` of the dtype (2e-13 in float64, 1e-4 in float32) keeps the
    amplified rounding noise of the inverse bounded."""
    return 1e3 * torch.finfo(dtype).eps


def rho_view(rho: Rho, like: Tensor) -> Tensor:
    """Return ``rho`` (float, 0-d or ``(B,)`` tensor) as a ``(B or 1, 1, 1, 1)`` tensor like ``like``."""
    r = torch.as_tensor(rho, dtype=like.dtype, device=like.device)
    if r.ndim == 0:
        return r.reshape(1, 1, 1, 1)
    if r.ndim == 1 and r.shape[0] in (1, like.shape[0]):
        return r.reshape(-1, 1, 1, 1)
    raise ValueError(f"rho must be a float or a tensor of shape (B,) = ({like.shape[0]},), got {tuple(r.shape)}")


class NonlinearOperatorError(TypeError):
    """A linear-only method (transpose, pinv, prox) was called on a nonlinear operator."""


class Operator(nn.Module):
    """Base class: ``forward`` is A(x); ``op(x)`` is the same call."""

    is_linear: bool = False
    # Filled by the registry: the YAML name and YAML-safe parameters that rebuild the operator.
    name: str = ""
    params: dict

    def __init__(self) -> None:
        super().__init__()
        self.params = {}

    def transpose(self, y: Tensor) -> Tensor:
        raise NonlinearOperatorError(f"{type(self).__name__} is nonlinear: it has no transpose")

    def pinv(self, y: Tensor) -> Tensor:
        raise NonlinearOperatorError(f"{type(self).__name__} is nonlinear: it has no pseudo-inverse")

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        raise NonlinearOperatorError(f"{type(self).__name__} is nonlinear: it has no prox")

    def visualize(self, y: Tensor) -> Tensor:
        """Map a measurement to a displayable image in ``[0, 1]`` (default ``clamp((y+1)/2)``)."""
        return ((y + 1) / 2).clamp(0, 1)

    def save(self, path: Union[str, Path]) -> None:
        """Save name, parameters and state (mask, kernel, f/M) to a ``.pt`` file; see ``load_operator``."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {"name": self.name, "params": dict(self.params), "state": state}
        atomic_write(path, lambda f: torch.save(payload, f))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())


class LinearOperator(Operator):
    """Linear A with an exact adjoint.

    Defaults (overridden by closed forms where they exist): ``prox`` solves the normal equation
    ``(A^T A + rho I) x = A^T y + rho z`` by conjugate gradient started at ``z``; ``pinv`` runs CG
    on ``A^T A x = A^T y`` from 0, which converges to the minimum-norm least-squares solution.
    ``cg_tol`` (relative residual; None = 1e-10 in float64, 1e-6 otherwise) and ``cg_max_iter``
    are attributes a user may change.
    """

    is_linear = True
    cg_tol: Optional[float] = None
    cg_max_iter: int = 500

    def _tol(self, x: Tensor) -> float:
        if self.cg_tol is not None:
            return float(self.cg_tol)
        return 1e-10 if x.dtype == torch.float64 else 1e-6

    def prox(self, z: Tensor, y: Tensor, rho: Rho) -> Tensor:
        """argmin_x ||y - A x||^2 + rho ||x - z||^2 (rho > 0; float or ``(B,)``); CG by default."""
        r = rho_view(rho, z)
        b = self.transpose(y) + r * z
        return conjugate_gradient(lambda v: self.transpose(self.forward(v)) + r * v, b, z,
                                  tol=self._tol(z), max_iter=self.cg_max_iter)

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y by CG on the normal equation (minimum-norm solution); closed forms override."""
        b = self.transpose(y)
        return conjugate_gradient(lambda v: self.transpose(self.forward(v)), b, torch.zeros_like(b),
                                  tol=self._tol(b), max_iter=self.cg_max_iter)


def pair(value: Union[int, Sequence[int]], name: str) -> tuple[int, int]:
    """``int`` or ``[H, W]`` -> ``(H, W)`` of positive ints; ValueError naming ``name`` otherwise."""
    items = [value, value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ValueError(f"{name} must be a positive int or a pair [H, W], got {value!r}")
    return items[0], items[1]


def positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive int, else raise a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_number(value: object, name: str, low: float = float("-inf"), high: float = float("inf"),
                 open_low: bool = False) -> float:
    """Return ``value`` as a float if it is a real number in ``[low, high]`` (``(low, high]`` with
    ``open_low``), else raise a ValueError naming ``name``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok or (open_low and value == low):
        if high < float("inf"):
            bound = f" in {'(' if open_low else '['}{low}, {high}]"
        else:
            bound = f" {'>' if open_low else '>='} {low}" if low > float("-inf") else ""
        raise ValueError(f"{name} must be a number{bound}, got {value!r}")
    return float(value)


def numpy_rng(seed: object, generator: object = None) -> np.random.Generator:
    """The numpy Generator of a randomised operator: ``generator`` if given, else one from ``seed``."""
    if generator is not None:
        if not isinstance(generator, np.random.Generator):
            raise ValueError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
        return generator
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(seed)
