"""Exactness of every linear operator: adjoint, pseudo-inverse, prox, autograd (float64).

Reference values come from the dense matrix of A, built by applying the operator to the basis
vectors, and from dense solves of (A^T A + rho I) x = A^T y + rho z.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from operators import build_operator

F64 = torch.float64


@dataclass
class Case:
    name: str
    params: dict
    shape: tuple  # (C, H, W) of one image
    closed_form: bool = True  # prox/pinv closed form (else CG, compared at CG_TOL)
    # False when singular values reach rounding level (std-3 Gaussian on 16 px: ~1e-19), so the
    # numerical range of A^T has no clear edge and only A pinv(A x) = A x is checked.
    well_conditioned: bool = True


CG_TOL = 1e-6  # stated tolerance for CG-based prox/pinv (internal CG tolerance 1e-10 in float64)
EXACT_TOL = 1e-8

CASES = [
    Case("super_resolution", {"scale_factor": 2}, (2, 16, 16)),
    Case("super_resolution", {"scale_factor": 4}, (2, 16, 16)),
    Case("super_resolution", {"scale_factor": 2}, (1, 8, 8)),
    Case("super_resolution", {"scale_factor": 3}, (2, 9, 15)),  # odd sizes, divisible
    Case("super_resolution", {"scale_factor": 2, "image_size": [9, 13]}, (1, 9, 13)),  # ceil sizes
    Case("super_resolution", {"scale_factor": 4, "mode": "avgpool"}, (2, 16, 16)),
    Case("super_resolution", {"scale_factor": 2, "mode": "avgpool"}, (1, 8, 8)),
    Case("sr_blur_decimation", {"scale_factor": 4}, (2, 16, 16)),
    Case("sr_blur_decimation", {"scale_factor": 2}, (1, 8, 8)),
    Case("gaussian_blur", {"boundary": "circular"}, (2, 16, 16), well_conditioned=False),  # 61 x 61, std 3
    Case("gaussian_blur", {"boundary": "circular", "kernel_size": 5, "intensity": 1.0}, (1, 9, 11)),
    Case("gaussian_blur", {"kernel_size": 7, "intensity": 0.6}, (2, 16, 16), closed_form=False),
    Case("gaussian_blur", {"kernel_size": 5, "intensity": 0.6}, (1, 9, 11), closed_form=False),
    Case("uniform_blur", {"kernel_size": 3}, (1, 8, 8), closed_form=False),
    Case("uniform_blur", {"kernel_size": 9, "boundary": "circular"}, (1, 16, 16)),
    Case("motion_blur", {"kernel_size": 7, "seed": 3}, (2, 9, 11), closed_form=False),
    Case("motion_blur", {"kernel_size": 7, "seed": 3, "boundary": "circular"}, (1, 16, 16)),
    Case("inpainting", {"mask_type": "random", "image_size": [9, 11]}, (2, 9, 11)),
    Case("inpainting", {"mask_type": "box", "image_size": 16, "box_size": 6, "margin": 2}, (1, 16, 16)),
    Case("inpainting", {"mask_type": "extreme", "image_size": 8, "box_size": 3, "margin": 1}, (1, 8, 8)),
    Case("colorization", {}, (3, 8, 8)),
    Case("colorization", {}, (3, 9, 7)),
]


def case_id(case: Case) -> str:
    return f"{case.name}-" + "-".join(f"{k}={v}" for k, v in case.params.items()) + f"-{'x'.join(map(str, case.shape))}"


def dense(op, shape) -> torch.Tensor:
    """Matrix of A (rows: measurement entries, columns: image entries) from basis images."""
    n = int(torch.tensor(shape).prod())
    return op(torch.eye(n, dtype=F64).reshape(n, *shape)).reshape(n, -1).T


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# These tensors are tiny: with more threads than free cores (a busy 2-core CI box) OpenMP barriers
# in the hundreds of CG iterations made a test 10x slower, so run single-threaded.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=CASES, ids=case_id)
def case(request) -> Case:
    return request.param


def test_adjoint_identity(case: Case) -> None:
    """<A x, y> = <x, A^T y> to 1e-10 relative, batch of 3."""
    op = build_operator(case.name, **case.params)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *case.shape, generator=g, dtype=F64)
    ax = op(x)
    y = torch.randn(ax.shape, generator=g, dtype=F64)
    lhs, rhs = (ax * y).sum(), (x * op.transpose(y)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * abs(float(lhs))
    assert op.transpose(y).shape == x.shape


def test_prox_matches_dense_solve(case: Case) -> None:
    """prox(z, y, rho) = (A^T A + rho I)^{-1} (A^T y + rho z), rho per image and as a float."""
    op = build_operator(case.name, **case.params)
    a = dense(op, case.shape)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, *case.shape, generator=g, dtype=F64)
    y = torch.randn(op(z).shape, generator=g, dtype=F64)
    tol = EXACT_TOL if case.closed_form else CG_TOL
    eye = torch.eye(a.shape[1], dtype=F64)
    for rho in (torch.tensor([0.05, 2.0], dtype=F64), 0.3):
        rhos = rho.tolist() if isinstance(rho, torch.Tensor) else [rho, rho]
        x = op.prox(z, y, rho)
        for b, r in enumerate(rhos):
            ref = torch.linalg.solve(a.T @ a + r * eye, a.T @ y[b].reshape(-1) + r * z[b].reshape(-1))
            assert rel(x[b].reshape(-1), ref) < tol


def test_pinv(case: Case) -> None:
    """A pinv(A x) = A x, and pinv(y) lies in range(A^T) (it is the minimum-norm solution)."""
    op = build_operator(case.name, **case.params)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *case.shape, generator=g, dtype=F64)
    ax = op(x)
    tol = EXACT_TOL if case.closed_form else CG_TOL
    assert rel(op(op.pinv(ax)), ax) < tol
    if not case.well_conditioned:
        return
    a = dense(op, case.shape)
    # Projector onto range(A^T) from a rank-revealing SVD; pinv(y) must be invariant under it.
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    v = vh[s > 1e-10 * s.max()].T
    p = op.pinv(torch.randn(ax.shape, generator=g, dtype=F64)).reshape(2, -1)
    assert rel(p @ v @ v.T, p) < tol


def test_autograd_gives_normal_operator(case: Case) -> None:
    """grad of ||A x||^2 through forward equals 2 A^T A x (autograd and transpose agree)."""
    op = build_operator(case.name, **case.params)
    x = torch.randn(2, *case.shape, generator=torch.Generator().manual_seed(3), dtype=F64, requires_grad=True)
    op(x).square().sum().backward()
    assert rel(x.grad, 2 * op.transpose(op(x.detach()))) < 1e-10


def test_float32_input_keeps_dtype(case: Case) -> None:
    """Buffers are cast to the input: float32 in, float32 out, close to the float64 result."""
    op = build_operator(case.name, **case.params)
    x = torch.randn(2, *case.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    y32 = op(x.float())
    assert y32.dtype == torch.float32
    assert rel(y32.double(), op(x)) < 1e-5
    assert op.transpose(y32).dtype == torch.float32


def test_reflect_adjoint_folds_margins_back() -> None:
    """A one-row shift with a 1-pixel reflect pad: the adjoint must fold the reflected margin
    back onto the row it copied (a plain transposed convolution would drop it)."""
    import numpy as np

    from operators.blur import ReflectConvolution

    kernel = np.zeros((3, 3))
    kernel[0, 1] = 1.0  # A x = x shifted down by one row, with the top row reflected
    op = ReflectConvolution(kernel)
    x = torch.arange(12.0, dtype=F64).reshape(1, 1, 3, 4)
    assert torch.equal(op(x)[0, 0, 0], x[0, 0, 1])  # reflect (no edge repeat): row -1 -> row 1
    y = torch.randn(1, 1, 3, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    expected = (dense(op, (1, 3, 4)).T @ y.reshape(-1)).reshape(1, 1, 3, 4)
    assert torch.allclose(op.transpose(y), expected, rtol=0, atol=1e-12)
    # Row 1 of x feeds output rows 0 (via the reflected margin) and 2, so A^T y row 1 = y0 + y2.
    assert torch.allclose(op.transpose(y)[0, 0, 1], y[0, 0, 0] + y[0, 0, 2], rtol=0, atol=1e-12)


def test_matrix_operator_is_exact() -> None:
    """MatrixOperator: adjoint identity, A pinv(A x) = A x and prox against the normal equations."""
    from operators import MatrixOperator

    g = torch.Generator().manual_seed(0)
    A = torch.randn(7, 12, generator=g, dtype=torch.float64)
    op = MatrixOperator(A, (3, 2, 2))
    x = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randn(2, 7, generator=g, dtype=torch.float64)
    assert abs((op(x) * y).sum() - (x * op.transpose(y)).sum()) < 1e-12 * (op(x) * y).abs().sum()
    assert torch.allclose(op(op.pinv(op(x))), op(x), atol=1e-10)
    rho = torch.tensor([0.5, 2.0], dtype=torch.float64)
    z = torch.randn_like(x)
    p = op.prox(z, y, rho)
    for b in range(2):  # gradient of ||y - A p||^2 + rho ||p - z||^2 vanishes
        grad = A.T @ (A @ p[b].flatten() - y[b]) + rho[b] * (p[b].flatten() - z[b].flatten())
        assert grad.abs().max() < 1e-10
