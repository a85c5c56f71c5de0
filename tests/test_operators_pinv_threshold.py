"""``pinv_threshold`` of the blurs: singular values below it count as zero in ``pinv`` (and in the
SVD form); forward, transpose and prox are unchanged; None is the exact pseudo-inverse (float64).

The reference is the truncated pseudo-inverse of the dense matrix (numpy SVD, basis images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import load_config
from operators import build_operator
from operators.base import LinearOperator, pinv_cutoff
from operators.fft import p2o

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

# (name, params, (C, H, W)); every kernel here is separable where the boundary is reflect.
CASES = [
    ("gaussian_blur", {"kernel_size": 13, "intensity": 1.5, "boundary": "circular"}, (2, 12, 12)),
    ("gaussian_blur", {"kernel_size": 5, "intensity": 1.0, "boundary": "circular"}, (1, 9, 11)),
    ("uniform_blur", {"kernel_size": 3, "boundary": "circular"}, (1, 10, 10)),
    ("motion_blur", {"kernel_size": 7, "seed": 3, "boundary": "circular"}, (1, 12, 12)),
    ("gaussian_blur", {"kernel_size": 7, "intensity": 1.0, "boundary": "reflect"}, (2, 12, 12)),
    ("uniform_blur", {"kernel_size": 3, "boundary": "reflect"}, (1, 9, 11)),
]


def case_id(case) -> str:
    name, params, shape = case
    return f"{name}-{params['boundary']}-{params['kernel_size']}-{'x'.join(map(str, shape))}"


def dense(op, shape) -> np.ndarray:
    """Matrix of A (rows: measurement entries, columns: image entries) from basis images."""
    n = int(np.prod(shape))
    return op(torch.eye(n, dtype=F64).reshape(n, *shape)).reshape(n, -1).T.numpy()


def threshold_between(s: np.ndarray, fraction: float) -> float:
    """A threshold in the widest gap of distinct singular values near the ``fraction`` quantile,
    so that no singular value lies within rounding of it."""
    values = np.unique(np.round(s, 12))[::-1]
    i = max(1, min(len(values) - 1, int(fraction * len(values))))
    return float(np.sqrt(values[i - 1] * values[i])) if values[i] > 0 else float(values[i - 1] / 2)


@pytest.fixture(params=CASES, ids=case_id)
def case(request):
    return request.param


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_pinv_equals_dense_truncated_pseudo_inverse(case, fraction: float) -> None:
    """op.pinv(y) = V diag(1/s, s >= t; 0 else) U^T y of the dense SVD, to 1e-10 relative."""
    name, params, shape = case
    a = dense(build_operator(name, **params), shape)
    u, s, vh = np.linalg.svd(a)
    t = threshold_between(s, fraction)
    kept = s >= t
    assert 0 < kept.sum() < len(s)
    reference = (vh[:len(s)][kept].T / s[kept]) @ u[:, :len(s)][:, kept].T
    op = build_operator(name, pinv_threshold=t, **params)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, *op(torch.zeros(1, *shape, dtype=F64)).shape[1:], generator=g, dtype=F64)
    out = op.pinv(y).reshape(3, -1).numpy()
    expected = y.reshape(3, -1).numpy() @ reference.T
    assert np.linalg.norm(out - expected) < 1e-10 * np.linalg.norm(expected)


def test_kept_subspace_identities(case) -> None:
    """A A^+ A x = A x for x in the span of the kept right singular vectors, A^+ A x = x there,
    and A^+ A A^+ = A^+."""
    name, params, shape = case
    plain = build_operator(name, **params)
    u, s, vh = np.linalg.svd(dense(plain, shape))
    t = threshold_between(s, 0.5)
    op = build_operator(name, pinv_threshold=t, **params)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, int(np.prod(shape)), generator=g, dtype=F64)
    v_kept = torch.from_numpy(vh[:len(s)][s >= t].T)
    x_kept = (x @ v_kept @ v_kept.T).reshape(2, *shape)
    ax = op(x_kept)
    assert float((op(op.pinv(ax)) - ax).norm()) < 1e-10 * float(ax.norm())
    assert float((op.pinv(ax) - x_kept).norm()) < 1e-10 * float(x_kept.norm())
    y = torch.randn(ax.shape, generator=g, dtype=F64)
    p = op.pinv(y)
    assert float((op.pinv(op(p)) - p).norm()) < 1e-10 * float(p.norm())


def test_forward_transpose_prox_unchanged(case) -> None:
    """Only pinv changes: forward, transpose and prox are bit for bit those without a threshold."""
    name, params, shape = case
    plain, cut = build_operator(name, **params), build_operator(name, pinv_threshold=0.03, **params)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *shape, generator=g, dtype=F64)
    y = torch.randn(plain(x).shape, generator=g, dtype=F64)
    assert torch.equal(plain(x), cut(x))
    assert torch.equal(plain.transpose(y), cut.transpose(y))
    assert torch.equal(plain.prox(x, y, 0.1), cut.prox(x, y, 0.1))


def test_none_is_the_exact_pseudo_inverse_bit_for_bit() -> None:
    """Default None: circular pinv is the FFT formula with the 1000 eps cut-off only (bit for bit,
    also equal to threshold 0); reflect pinv is the base class's CG; the SVD rank is unchanged."""
    params = {"kernel_size": 13, "intensity": 1.5, "boundary": "circular"}
    op = build_operator("gaussian_blur", **params)
    assert op.pinv_threshold is None and "pinv_threshold" not in op.params
    y = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=F64)
    otf = p2o(op.kernel, (16, 16))
    d = otf.abs() ** 2
    keep = d > pinv_cutoff(F64) ** 2 * d.max()
    inv = torch.where(keep, 1 / torch.where(keep, d, torch.ones_like(d)), torch.zeros_like(d))
    old = torch.fft.ifft2(otf.conj() * (torch.fft.fft2(y) * inv)).real
    assert torch.equal(op.pinv(y), old)
    assert torch.equal(build_operator("gaussian_blur", pinv_threshold=0.0, **params).pinv(y), old)
    products = op.svd((3, 16, 16), dtype=F64).singulars
    assert int((products > pinv_cutoff(F64) * products.max()).sum()) == len(products) == 3 * 256
    reflect = build_operator("gaussian_blur", kernel_size=5, intensity=0.6)
    assert torch.equal(reflect.pinv(y), LinearOperator.pinv(reflect, y))


def test_svd_form_drops_singular_values_below_the_threshold() -> None:
    """The SVD form (DDRM) keeps exactly the dense singular values >= t (each channel's, sorted)."""
    params = {"kernel_size": 13, "intensity": 1.5, "boundary": "circular"}
    op = build_operator("gaussian_blur", pinv_threshold=0.03, **params)
    s = np.linalg.svd(dense(build_operator("gaussian_blur", **params), (1, 16, 16)), compute_uv=False)
    kept = np.sort(s[s >= 0.03])[::-1]
    assert 0 < len(kept) < 256
    singulars = op.svd((3, 16, 16), dtype=F64).singulars.numpy()
    assert np.allclose(singulars, np.repeat(kept, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("value", [-0.01, "0.03", True, [0.03]])
def test_bad_threshold_is_one_line_error(value) -> None:
    with pytest.raises(ValueError, match=r"^pinv_threshold must be a number >= 0, got [^\n]*$"):
        build_operator("gaussian_blur", boundary="circular", pinv_threshold=value)


def test_threshold_is_recorded_and_refused_without_an_svd_form() -> None:
    op = build_operator("uniform_blur", kernel_size=3, boundary="circular", pinv_threshold=0.03)
    assert op.params["pinv_threshold"] == 0.03 and op.pinv_threshold == 0.03
    with pytest.raises(ValueError, match="pinv_threshold with boundary 'reflect' needs a separable kernel"):
        build_operator("motion_blur", kernel_size=7, seed=3, boundary="reflect", pinv_threshold=0.03)


def test_threshold_from_yaml(tmp_path) -> None:
    """``task.operator.pinv_threshold`` in a config (or ``--set``) reaches the operator."""
    path = tmp_path / "deblur.yaml"
    path.write_text("data:\n  input: x\ntask:\n  operator:\n    name: gaussian_blur\n    kernel_size: 13\n"
                    "    intensity: 1.5\n    boundary: circular\n    pinv_threshold: 0.03\n")
    for overrides in ([], ["task.operator.pinv_threshold=3e-2"]):
        op = build_operator(**load_config(str(path), overrides)["task"]["operator"])
        assert op.pinv_threshold == 0.03 and op.params["pinv_threshold"] == 0.03
