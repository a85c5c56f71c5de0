"""SVD forms of the operators (operators/svd.py): orthogonal factors, U S V^T = A on random inputs, the
closed forms derived from them, and the official DDRM factors stored in the DDRM golden files."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict

import pytest
import torch
from conftest import GOLDEN_SAMPLERS_DIR

from operators import MatrixOperator, build_operator
from operators.svd import SeparableSVD, svd_problem

SHAPE = (3, 8, 8)
# (name, params, tolerance: float32 factors where DDRM's classes compute them in float32
# (super_resolution, colorization, ddrm_deblurring), float64 elsewhere).
CASES = [
    ("super_resolution", {"scale_factor": 2}, 1e-5),
    ("super_resolution", {"scale_factor": 4, "mode": "avgpool"}, 1e-5),
    ("inpainting", {"mask_type": "random", "image_size": 8, "seed": 3}, 1e-12),
    ("colorization", {}, 1e-5),
    ("colorization", {"weights": [0.2, 0.5, 0.3]}, 1e-5),
    ("gaussian_blur", {"kernel_size": 5, "intensity": 1.0, "boundary": "reflect"}, 1e-12),
    ("gaussian_blur", {"kernel_size": 7, "intensity": 1.5, "boundary": "circular"}, 1e-12),
    ("uniform_blur", {"kernel_size": 3}, 1e-12),
    ("sr_blur_decimation", {"scale_factor": 2, "kernel": "bicubic_sr_kernel"}, 1e-12),
    ("ddrm_deblurring", {"image_size": 8}, 1e-5),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dense(f, n_in: int) -> torch.Tensor:
    """The matrix of a linear map on flat vectors, column by column."""
    return torch.stack([f(e).flatten() for e in torch.eye(n_in, dtype=torch.float64)], dim=1)


@pytest.mark.parametrize("name,params,tol", CASES, ids=IDS)
def test_factors_are_orthogonal_and_reproduce_the_operator(name: str, params: Dict[str, Any], tol: float) -> None:
    op = build_operator(name, **params)
    svd = op.svd(SHAPE, dtype=torch.float64)
    d, n = svd.dim, len(svd.singulars)
    V = dense(lambda e: svd.V(e[None]), d)                                    # (D, D)
    U = dense(lambda e: svd.U(e[None]), n)                                    # (m, n)
    assert (V.T @ V - torch.eye(d, dtype=torch.float64)).abs().max() < 10 * tol + 1e-12
    assert (U.T @ U - torch.eye(n, dtype=torch.float64)).abs().max() < 10 * tol + 1e-12
    assert bool((svd.singulars >= 0).all()) and n <= d
    x = rand(2, *SHAPE)
    y = op(x)
    scale = y.abs().max()
    assert ((U @ (svd.singulars[:, None] * V[:, :n].T) @ x.flatten(1).T).T - y.flatten(1)).abs().max() < tol * scale
    assert (svd.forward(x) - y).abs().max() < tol * scale
    assert (svd.Vt(svd.V(x.flatten(1))) - x.flatten(1)).abs().max() < 10 * tol + 1e-12
    # The closed forms from the factors agree with the operator's own (reflect blur: CG, tolerance 1e-10).
    assert (svd.transpose(y) - op.transpose(y)).abs().max() < tol * op.transpose(y).abs().max()
    z = rand(2, *SHAPE, seed=1)
    assert (svd.prox(z, y, 0.3) - op.prox(z, y, 0.3)).abs().max() < max(10 * tol, 1e-8) * z.abs().max()


def test_dense_matrix_svd_drops_zero_singular_values() -> None:
    """A rank-5 16 x 48 matrix: 5 singulars kept, and pinv / prox equal the dense solves."""
    a = rand(16, 5) @ rand(5, 48, seed=1)
    op = MatrixOperator(a, (3, 4, 4))
    svd = op.svd((3, 4, 4))
    assert len(svd.singulars) == 5
    y, z = rand(2, 16, seed=2), rand(2, 3, 4, 4, seed=3)
    assert (svd.pinv(y) - op.pinv(y)).abs().max() < 1e-10
    assert (svd.prox(z, y, 0.5) - op.prox(z, y, 0.5)).abs().max() < 1e-10


def test_operators_without_an_svd_form_say_why() -> None:
    assert "nonlinear" in svd_problem(build_operator("phase_retrieval"))
    motion = build_operator("motion_blur", kernel_size=9, seed=1)
    assert "not separable" in svd_problem(motion)
    with pytest.raises(ValueError, match="not separable"):
        motion.svd(SHAPE)
    assert svd_problem(build_operator("super_resolution")) is None
    assert svd_problem(None) == "no operator was given"


# ---- The official factors (DDRM golden files: ddrm_check, ddrm_singulars, A_image) -----------------
@lru_cache(maxsize=None)
def golden(name: str) -> Dict[str, Any]:
    return torch.load(GOLDEN_SAMPLERS_DIR / f"{name}.pt", weights_only=True)


def built(case: Dict[str, Any]) -> Any:
    return build_operator(**case["operator"])


@pytest.mark.parametrize("name", ["ddrm_sr4_bicubic", "ddrm_deblur_gauss"])
def test_official_check_vectors(name: str) -> None:
    """Vt, V, U, Ut, H and singulars() of the official classes on the files' fixed random vectors:
    bit for bit (same float32 torch.svd, same layout)."""
    case = golden(name)
    check, svd = case["ddrm_check"], built(case).svd(case["image"].shape)
    y_shape = case["y"].shape
    x = check["x"].reshape(case["image"].shape)
    assert torch.equal(svd.singulars, case["ddrm_singulars"])
    assert torch.equal(svd.Vt(x), check["Vt_x"])
    assert torch.equal(svd.V(check["x"]).flatten(1), check["V_x"])
    assert torch.equal(svd.forward(x).flatten(1), check["H_x"])
    assert torch.equal(svd.U(check["u"]).flatten(1), check["U_u"])
    assert torch.equal(svd.Ut(check["y"].reshape(y_shape)), check["Ut_y"])


def test_srconv_checks_of_the_nvlabs_files() -> None:
    """NVlabs/RED-diff's bicubic4 is the same SRConv class: its stored checks (pgdm_sr4 `svd_check`,
    reddiff_sr4 `svd_check_*`) against our SVD form: Vt, singulars, H, Ut, H^T bit for bit, H_pinv to
    float32 rounding (the code divides by s, we multiply by 1 / s: measured 4.8e-7 abs)."""
    svd = build_operator("super_resolution", scale_factor=4).svd((1, 3, 32, 32))
    pgdm = golden("pgdm_sr4")["svd_check"]
    h = pgdm["H"].reshape(1, 3, 8, 8)
    assert torch.equal(svd.Vt(pgdm["vector"]), pgdm["Vt"]) and torch.equal(svd.singulars, pgdm["singulars"])
    assert torch.equal(svd.forward(pgdm["vector"]).flatten(1), pgdm["H"])
    assert torch.equal(svd.transpose(h).flatten(1), pgdm["Ht_of_H"])
    assert (svd.pinv(h).flatten(1) - pgdm["H_pinv_of_H"]).abs().max() < 1e-6 * pgdm["H_pinv_of_H"].abs().max()
    red = golden("reddiff_sr4")
    x, y = red["svd_check_vector"], red["svd_check_y_vector"].reshape(1, 3, 8, 8)
    assert torch.equal(svd.Vt(x), red["svd_check_Vt"]) and torch.equal(svd.singulars, red["svd_singulars"])
    assert torch.equal(svd.forward(x).flatten(1), red["svd_check_H"]) and torch.equal(svd.Ut(y), red["svd_check_Ut"])
    assert torch.equal(svd.transpose(y).flatten(1), red["svd_check_Ht"])
    assert (svd.pinv(y).flatten(1) - red["svd_check_H_pinv"]).abs().max() < 1e-6 * red["svd_check_H_pinv"].abs().max()


def test_super_resolution_is_srconv() -> None:
    """SRConv's H(image) is the project's bicubic super_resolution up to float32 SVD rounding
    (golden README: 1.9e-6; measured 1.9e-6)."""
    case = golden("ddrm_sr4_bicubic")
    assert (built(case)(case["image"]) - case["A_image"]).abs().max() < 5e-6


def test_ddrm_deblurring_is_the_official_operator_and_not_a_blur() -> None:
    """The generated form (kernel_size 5, sigma 10) and the stored kernel_1d give the official kernel,
    factors and permutation; H(image) is A_image exactly and 0.226 away from the 4-tap blur, which
    the same factors with interleaved singulars reach within the zeroed values (golden README 0.003)."""
    case = golden("ddrm_deblur_gauss")
    official = case["ddrm_operator"]
    op, again = built(case), build_operator(**case["operator_as_generated"])
    for o in (op, again):
        assert torch.equal(o.kernel_1d.float(), official["kernel"]) and torch.equal(o.perm, official["perm"])
        assert torch.equal(o.u_small.float(), official["U_small"]) and torch.equal(o.v_small.float(), official["V_small"])
        assert torch.equal(o.s_small.float(), official["singulars_small"])
    assert int((op.s_small == 0).sum()) == 2 and int((op.svd(case["image"].shape).singulars == 0).sum()) == 372
    image = case["image"]
    assert torch.equal(op(image), case["A_image"])
    assert 0.2 < (op(image) - case["blur_4tap_image"]).abs().max() < 0.25
    axis = (op.u_small.float(), op.s_small.float(), op.v_small.float())
    interleaved = SeparableSVD(axis, axis, 3, op.perm, tiled=False)
    assert (interleaved.forward(image) - case["blur_4tap_image"]).abs().max() < 4e-3


def test_ddrm_deblurring_perm_is_state() -> None:
    """perm is a buffer: a stored permutation is loaded like a mask (state_dict), and the SVD form
    follows it. Swapping two tied entries moves their V-space coefficients and, because the
    singulars are tiled by position, changes H itself: the tie order of the platform's sort matters."""
    op = build_operator("ddrm_deblurring", image_size=8)
    x = rand(1, *SHAPE)
    before_vt, before_h = op.svd(SHAPE, dtype=torch.float64).Vt(x), op(x)
    values = (op.s_small[:, None] * op.s_small[None, :]).flatten()[op.perm]
    q = int(torch.nonzero(values[1:] == values[:-1])[0])            # a tie s_a s_b = s_b s_a
    state = op.state_dict()
    state["perm"] = op.perm.clone()
    state["perm"][[q, q + 1]] = state["perm"][[q + 1, q]]
    other = build_operator("ddrm_deblurring", image_size=8)
    other.load_state_dict(state)
    after_vt = other.svd(SHAPE, dtype=torch.float64).Vt(x)
    assert torch.equal(after_vt[:, 3 * q:3 * q + 3], before_vt[:, 3 * q + 3:3 * q + 6])
    assert (other(x) - before_h).abs().max() > 1e-3
    with pytest.raises(ValueError, match="built for 8x8"):
        op.svd((3, 16, 16))
    with pytest.raises(ValueError, match="not both"):
        build_operator("ddrm_deblurring", kernel_1d=[0.2] * 5, kernel_size=5)
