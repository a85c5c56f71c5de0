"""Classical restorations that a diffusion prior has to beat: bicubic upsampling for bicubic
super-resolution and harmonic inpainting for masks. Both see the same measurement y as the
samplers and use no prior beyond smoothness.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from operators.inpainting import Inpainting
from operators.resize import SeparableResize, bicubic_matrix


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


def classical_method(op: Any) -> str:
    """The classical counterpart of an operator: "bicubic" or "harmonic"; ValueError for others."""
    if isinstance(op, SeparableResize) and op.mode == "bicubic":
        return "bicubic"
    if isinstance(op, Inpainting):
        return "harmonic"
    raise ValueError(f"no classical baseline for operator {getattr(op, 'name', type(op).__name__)!r} "
                     f"(bicubic super_resolution and inpainting have one)")


def classical_restore(op: Any, y: torch.Tensor) -> torch.Tensor:
    """The `classical_method(op)` restoration of measurements y: (N, C, H, W) in [-1, 1]."""
    if classical_method(op) == "bicubic":
        return bicubic_upsample(y, op.scale_factor)
    return harmonic_inpaint(y, op.mask)
