"""SVD forms ``A = U diag(s) V^T`` of structured linear operators, in the layout of DDRM's
``H_functions`` (Kawar et al. 2022, code ``functions/svd_replacement.py``).

An operator with an SVD form has ``op.svd(shape, device, dtype)`` (``shape`` ends with the image's
``(C, H, W)``), returning an :class:`SVD` for that image size:
* ``Vt(x)``: image ``(B, C, H, W)`` -> V-space coefficients ``(B, D)``, ``D = C H W``; ``V`` is its inverse;
* ``Ut(y)``: measurement -> U-space coefficients ``(B, n)``; ``U`` maps them back to the measurement shape;
* ``singulars``: ``(n,)``, ``n <= D``; V-space entry ``i < n`` is measured with ``singulars[i]``, entries
  ``i >= n`` are not measured, so ``A x = U(singulars * Vt(x)[:, :n])``.
``transpose``, ``pinv`` and ``prox`` follow from the factors (``SVD`` below). Only
``ddrm_deblurring`` keeps zero singular values inside ``singulars`` (as the official code does);
every other form stops at the last non-zero one. ``svd_problem(op)`` says in one line why an
operator has no SVD form (None when it has one).

V-space layouts follow the official classes where one exists, because DDRM injects its noise in
V-space and the layout decides where each draw lands: separable operators (``SeparableSVD``) order
each channel's 2-D coefficients by ``order`` and interleave the channels (entry ``C q + c``), like
``SRConv`` and ``Deblurring``; pixel selection and colour mixing follow ``Inpainting`` and
``Colorization``.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Hashable, Optional, Sequence

import torch
from torch import Tensor, nn


class SVD(abc.ABC):
    """Factors of one operator for one image size, device and dtype; see the module docstring."""

    def __init__(self, singulars: Tensor, image_shape: Sequence[int]) -> None:
        self.singulars = singulars
        self.image_shape = tuple(int(v) for v in image_shape)
        self.dim = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]

    @abc.abstractmethod
    def Vt(self, x: Tensor) -> Tensor:  # noqa: N802  (the papers' names)
        """(B, C, H, W) -> (B, D)."""

    @abc.abstractmethod
    def V(self, v: Tensor) -> Tensor:  # noqa: N802
        """(B, D) -> (B, C, H, W)."""

    @abc.abstractmethod
    def Ut(self, y: Tensor) -> Tensor:  # noqa: N802
        """measurement -> (B, n)."""

    @abc.abstractmethod
    def U(self, u: Tensor) -> Tensor:  # noqa: N802
        """(B, n) -> measurement."""

    def pad(self, u: Tensor) -> Tensor:
        """(B, n) -> (B, D) with zeros at the unmeasured entries (DDRM's ``add_zeros``)."""
        return torch.cat([u, u.new_zeros(u.shape[0], self.dim - u.shape[1])], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """A x = U(s * Vt(x)[:, :n])."""
        return self.U(self.singulars * self.Vt(x)[:, :len(self.singulars)])

    def transpose(self, y: Tensor) -> Tensor:
        """A^T y = V(pad(s * Ut(y)))."""
        return self.V(self.pad(self.singulars * self.Ut(y)))

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = V(pad(Ut(y) / s)), 0 where s = 0."""
        s = self.singulars
        inv = torch.where(s > 0, 1 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
        return self.V(self.pad(inv * self.Ut(y)))

    def prox(self, z: Tensor, y: Tensor, rho: Tensor) -> Tensor:
        """argmin_x ||y - A x||^2 + rho ||x - z||^2 (rho float or (B,)): in V-space the measured
        entries become (s Ut(y) + rho Vt(z)) / (s^2 + rho), the others keep Vt(z)."""
        s, n = self.singulars, len(self.singulars)
        r = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, 1)
        v = self.Vt(z)
        measured = (s * self.Ut(y) + r * v[:, :n]) / (s * s + r)
        return self.V(torch.cat([measured, v[:, n:]], dim=1))


def _inverse(order: Tensor) -> Tensor:
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))


class SeparableSVD(SVD):
    """``A X_c = W_h X_c W_w^T`` per channel, ``W = U diag(s) V^T`` per axis (``u`` (m, m), ``s`` (m,),
    ``v`` (n, n)). A channel's 2-D coefficients ``T = V_h^T X_c V_w`` (n_h n_w, row-major) are taken in
    ``order``, whose first ``m_h m_w`` entries are the measured block ``a < m_h, b < m_w``; the first
    ``rank`` of them are kept as measured (``rank`` None: all). Channels are interleaved: V-space entry
    ``C q + c`` is ``T_c[order[q]]``; U-space likewise with ``U_h^T Y_c U_w``.
    ``tiled`` reproduces the official ``Deblurring.singulars()``, which tiles the per-channel values
    (entry ``m`` gets ``s_q[m mod Q]``) instead of interleaving them (entry ``C q + c`` gets ``s_q[q]``).
    """

    def __init__(self, axis_h: Sequence[Tensor], axis_w: Sequence[Tensor], channels: int, order: Tensor,
                 rank: Optional[int] = None, tiled: bool = False) -> None:
        (self.u_h, s_h, self.v_h), (self.u_w, s_w, self.v_w) = axis_h, axis_w
        (m_h, n_h), (m_w, n_w) = (len(s_h), len(self.v_h)), (len(s_w), len(self.v_w))
        block = m_h * m_w
        self.order, self.order_inv = order, _inverse(order)
        first = order[:block]
        if not bool(((first // n_w < m_h) & (first % n_w < m_w)).all()):
            raise ValueError("the first entries of order must be the measured block")
        self.rank = block if rank is None else rank
        u_order = (first // n_w) * m_w + first % n_w
        self.u_order, self.u_order_inv = u_order, _inverse(u_order)
        grid = torch.zeros(n_h, n_w, dtype=s_h.dtype, device=s_h.device)
        grid[:m_h, :m_w] = s_h[:, None] * s_w[None, :]
        per_channel = grid.flatten()[first[:self.rank]]
        singulars = per_channel.repeat(channels) if tiled else per_channel.repeat_interleave(channels)
        self.channels, self.measured_shape = channels, (m_h, m_w)
        super().__init__(singulars, (channels, n_h, n_w))

    def _to_space(self, t: Tensor, order: Tensor) -> Tensor:
        """(B, C, h, w) coefficient planes -> (B, C Q) in ``order``, channel-fastest."""
        return t.flatten(2)[..., order].transpose(1, 2).reshape(t.shape[0], -1)

    def _from_space(self, v: Tensor, order_inv: Tensor, size: tuple) -> Tensor:
        planes = v.reshape(v.shape[0], -1, self.channels).transpose(1, 2)[..., order_inv]
        return planes.reshape(v.shape[0], self.channels, *size)

    def Vt(self, x: Tensor) -> Tensor:  # noqa: N802
        return self._to_space(self.v_h.T @ x @ self.v_w, self.order)

    def V(self, v: Tensor) -> Tensor:  # noqa: N802
        return self.v_h @ self._from_space(v, self.order_inv, self.image_shape[1:]) @ self.v_w.T

    def Ut(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._to_space(self.u_h.T @ y @ self.u_w, self.u_order)[:, :self.channels * self.rank]

    def U(self, u: Tensor) -> Tensor:  # noqa: N802
        full = self.channels * len(self.u_order)
        u = torch.cat([u, u.new_zeros(u.shape[0], full - u.shape[1])], dim=1)
        return self.u_h @ self._from_space(u, self.u_order_inv, self.measured_shape) @ self.u_w.T


class SelectionSVD(SVD):
    """``A = diag(m)`` with a pixel mask ``m`` (H, W) shared by the channels, measurement ``m * x``
    (official ``Inpainting``: pixel-major, channel-fastest vectors ``x_i[C p + c]``; V-space = the kept
    entries, then the missing ones, each in increasing index; U = V on the kept entries, s = 1)."""

    def __init__(self, mask: Tensor, channels: int) -> None:
        kept = (mask.flatten() > 0.5).repeat_interleave(channels)
        idx = torch.arange(len(kept), device=mask.device)
        self.order = torch.cat([idx[kept], idx[~kept]])
        self.order_inv = _inverse(self.order)
        super().__init__(torch.ones(int(kept.sum()), dtype=mask.dtype, device=mask.device),
                         (channels, *mask.shape))

    def Vt(self, x: Tensor) -> Tensor:  # noqa: N802
        return x.flatten(2).transpose(1, 2).reshape(x.shape[0], -1)[:, self.order]

    def V(self, v: Tensor) -> Tensor:  # noqa: N802
        c, h, w = self.image_shape
        return v[:, self.order_inv].reshape(v.shape[0], h * w, c).transpose(1, 2).reshape(v.shape[0], c, h, w)

    def Ut(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.Vt(y)[:, :len(self.singulars)]

    def U(self, u: Tensor) -> Tensor:  # noqa: N802
        return self.V(self.pad(u))


class ChannelMixSVD(SVD):
    """``y = h . x`` per pixel, one output channel (official ``Colorization``): the SVD of the 1 x C
    row ``h`` (u (1, 1), s (1,), v (C, C)); V-space is component-major (entry ``k H W + p`` is
    component k of pixel p), the first ``H W`` entries measured with singular value ``s``."""

    def __init__(self, u: Tensor, s: Tensor, v: Tensor, size: Sequence[int]) -> None:
        self.u, self.v = u[0, 0], v
        h, w = size
        super().__init__(s[0].expand(h * w), (len(v), h, w))

    def Vt(self, x: Tensor) -> Tensor:  # noqa: N802
        return torch.einsum("ck,bchw->bkhw", self.v, x).reshape(x.shape[0], -1)

    def V(self, v: Tensor) -> Tensor:  # noqa: N802
        return torch.einsum("ck,bkhw->bchw", self.v, v.reshape(v.shape[0], *self.image_shape))

    def Ut(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.u * y.reshape(y.shape[0], -1)

    def U(self, u: Tensor) -> Tensor:  # noqa: N802
        return (self.u * u).reshape(u.shape[0], 1, *self.image_shape[1:])


class DenseSVD(SVD):
    """A dense ``(m, d)`` matrix acting on flattened images: ``torch.linalg.svd``, singular values
    below ``cutoff * max`` dropped (their directions count as unmeasured)."""

    def __init__(self, matrix: Tensor, image_shape: Sequence[int], cutoff: float, device: Any = None,
                 dtype: torch.dtype = torch.float64) -> None:
        u, s, vh = torch.linalg.svd(matrix.cpu(), full_matrices=True)
        rank = int((s > cutoff * s.max()).sum())
        self.u, s, self.vh = cast((u[:, :rank], s[:rank], vh), device, dtype)
        super().__init__(s, image_shape)

    def Vt(self, x: Tensor) -> Tensor:  # noqa: N802
        return x.flatten(1) @ self.vh.T

    def V(self, v: Tensor) -> Tensor:  # noqa: N802
        return (v @ self.vh).reshape(v.shape[0], *self.image_shape)

    def Ut(self, y: Tensor) -> Tensor:  # noqa: N802
        return y.flatten(1) @ self.u

    def U(self, u: Tensor) -> Tensor:  # noqa: N802
        return u @ self.u.T


def axis_svd(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(u, s, v)`` of a 1-D operator matrix ``(m, n)``, ``m <= n``, with full square ``u``, ``v`` as
    ``torch.svd(matrix, some=False)`` returns them, computed on the CPU in the matrix's dtype
    (DDRM's classes: float32, which fixes the official basis)."""
    u, s, vh = torch.linalg.svd(matrix.cpu(), full_matrices=True)
    return u, s, vh.T


def block_order(s_h: Tensor, s_w: Tensor, n_h: int, n_w: int, by_value: bool = False) -> Tensor:
    """Order of a channel's ``n_h x n_w`` coefficients (row-major indices): the measured block
    ``a < len(s_h), b < len(s_w)`` first, row-major (``SRConv``'s ``perm``) or, with ``by_value``, by
    decreasing ``s_h[a] s_w[b]`` (stable), then the other entries row-major."""
    idx = torch.arange(n_h * n_w).reshape(n_h, n_w)
    inside = torch.zeros(n_h, n_w, dtype=torch.bool)
    inside[:len(s_h), :len(s_w)] = True
    block = idx[inside]
    if by_value:
        block = block[torch.argsort((s_h[:, None] * s_w[None, :]).flatten().cpu(), descending=True, stable=True)]
    return torch.cat([block, idx[~inside]])


def cast(factors: Sequence[Tensor], device: Any, dtype: torch.dtype) -> list[Tensor]:
    """Floating tensors to ``dtype`` on ``device``; index tensors keep their dtype."""
    return [f.to(device=device, dtype=dtype if f.is_floating_point() else f.dtype) for f in factors]


def cached_svd(op: nn.Module, key: Hashable, build: Callable[[], SVD]) -> SVD:
    """``build()`` once per ``key`` and per state of the operator's buffers (a mask or kernel copied
    into the operator afterwards invalidates the cache), so a sampling loop factors only once."""
    state = tuple((name, b.data_ptr(), b._version) for name, b in op.named_buffers())
    cache = op.__dict__.setdefault("_svd_cache", {})
    if cache.get("state") != state:
        cache.clear()
        cache["state"] = state
    if key not in cache:
        cache[key] = build()
    return cache[key]


def svd_problem(op: Any) -> Optional[str]:
    """Why ``op`` has no SVD form, in one phrase (None when ``op.svd`` can be used)."""
    name = getattr(op, "name", "") or type(op).__name__
    if op is None:
        return "no operator was given"
    if not getattr(op, "is_linear", False):
        return f"{name!r} is nonlinear"
    if not callable(getattr(op, "svd", None)):
        return f"{name!r} has no SVD form (operators with one: super_resolution, inpainting, colorization, " \
               f"separable gaussian_blur / uniform_blur, ddrm_deblurring)"
    check = getattr(op, "svd_unavailable", None)
    return check() if callable(check) else None
