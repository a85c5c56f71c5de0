"""PiGDM: one step against its closed form for a linear network (the VJP, both guidances, both
weightings), the noise-aware inverse against dense solves, the grid, refusals, and the exact
Gaussian-mixture posterior, where the code's pseudoinverse form fails for noisy y and the paper's
noise-aware form does not."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import GMM_CASES, N_SAMPLES, SHAPE, gmm_swd, make_gmm_cases

from guided_diffusion.analytic import sliced_wasserstein
from operators import MatrixOperator, build_operator
from samplers import build_sampler
from samplers.pgdm import solve_measurement_covariance

pytestmark = pytest.mark.usefixtures("one_thread")
D = math.prod(SHAPE)


class LinearEps:
    """eps(x_t, t) = M vec(x_t): x0_hat = J x_t with J = (I - sqrt(1 - abar) M) / sqrt(abar)."""

    def __init__(self, M: torch.Tensor):
        self.M = M

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.M.T).reshape(x.shape)


@pytest.mark.parametrize("guidance", ["pinv", "noisy"])
@pytest.mark.parametrize("adaptive_weight", [True, False])
def test_step_matches_its_closed_form(guidance: str, adaptive_weight: bool) -> None:
    """One step t -> s with eta = 0 (no draw), computed with dense matrices: g = J^T v, v = A^+ y -
    A^+ A x0 or A^T (r_t^2 A A^T + sigma^2 I)^-1 (y - A x0), r_t^2 = 1 - abar_t; x_s = sqrt(abar_s) x0 +
    c2 eps + coeff g with the code's awd weight or eps recomputed (measured 1.4e-14 absolute on values of 20)."""
    g = torch.Generator().manual_seed(0)
    M = 0.3 * torch.randn(D, D, generator=g, dtype=torch.float64)
    A = torch.randn(12, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    op, x_t, y = MatrixOperator(A, SHAPE), torch.randn(2, *SHAPE, generator=g, dtype=torch.float64), torch.randn(2, 12, generator=g, dtype=torch.float64)
    sigma, scale = 0.2, 1.7
    sampler = build_sampler("pgdm", steps=10, eta=0.0, scale=scale, guidance=guidance, adaptive_weight=adaptive_weight)
    i = 6
    x_s, x0 = sampler.step(LinearEps(M), x_t, torch.full((2,), i), op, y, sigma, g)

    a, a_s = sampler.diffusion.alphas_cumprod[i].item(), sampler.diffusion.alphas_cumprod_prev[i].item()
    J = (torch.eye(D, dtype=torch.float64) - math.sqrt(1 - a) * M) / math.sqrt(a)
    x = x_t.flatten(1)
    x0_ref, eps = x @ J.T, x @ M.T
    if guidance == "pinv":
        P = torch.linalg.pinv(A)
        v, kappa = y @ P.T - x0_ref @ (P @ A).T, math.sqrt(a)
    else:
        cov = (1 - a) * A @ A.T + sigma ** 2 * torch.eye(12, dtype=torch.float64)
        v, kappa = torch.linalg.solve(cov, (y - x0_ref @ A.T).T).T @ A, math.sqrt(a) * (1 - a)
    grad = v @ J
    c2 = math.sqrt(1 - a_s)
    weight = math.sqrt(a_s) if adaptive_weight else math.sqrt(a_s) - c2 * math.sqrt(a) / math.sqrt(1 - a)
    expected = math.sqrt(a_s) * x0_ref + c2 * eps + weight * kappa * scale * grad
    assert torch.allclose(x0.flatten(1), x0_ref, rtol=0, atol=1e-12)
    assert torch.allclose(x_s.flatten(1), expected, rtol=0, atol=1e-12)


def test_noisy_guidance_without_noise_is_the_pinv_guidance(gmm_cases) -> None:
    """sigma_y = 0: r_t^2 A^T (r_t^2 A A^T)^-1 = A^+ for a full-row-rank A, so the noise-aware form with
    the code's weight is the code's pseudoinverse form (same draws; CG at 1e-10: measured 7e-15)."""
    model, cases = gmm_cases
    op, y, _, _ = cases["random_matrix"]
    runs = [build_sampler("pgdm", steps=20, guidance=kind).sample(
        model, op, y[:8], sigma=0.0, shape=(8, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for kind in ("pinv", "noisy")]
    assert (runs[0] - runs[1]).abs().max().item() < 1e-9


def test_measurement_covariance_solve() -> None:
    """(r^2 A A^T + s^2 I)^-1 r by CG on the operator against a dense solve (matrix operator), and for
    an image-shaped inpainting y with s = 0, where A A^T is singular, the minimum-norm solution
    r / r^2 on the observed pixels and 0 elsewhere."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(16, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    r = torch.randn(3, 16, generator=g, dtype=torch.float64)
    u = solve_measurement_covariance(MatrixOperator(A, SHAPE), r, 0.4, 0.1)
    ref = torch.linalg.solve(0.4 * A @ A.T + 0.01 * torch.eye(16, dtype=torch.float64), r.T).T
    assert (u - ref).abs().max().item() < 1e-9
    op = build_operator("inpainting", mask_type="random", image_size=8, mask_prob_range=[0.5, 0.5], seed=0)
    r = op.forward(torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64))
    u = solve_measurement_covariance(op, r, 0.25, 0.0)
    assert (u - r / 0.25).abs().max().item() < 1e-9


def test_grid_and_start_are_the_codes() -> None:
    """range(0, 1000, 1000 // steps): 980 .. 0 for 50 steps (= the files' 'ddim50'), 31 steps for 30
    (0 .. 990, stride 33); the start A^+ y noised to the first step."""
    assert build_sampler("pgdm", steps=50).diffusion.timestep_map.tolist() == list(range(0, 1000, 20))
    assert build_sampler("pgdm", steps=50, timestep_respacing="ddim50").diffusion.timestep_map.tolist() == list(range(0, 1000, 20))
    assert build_sampler("pgdm", steps=30).diffusion.timestep_map.tolist() == list(range(0, 1000, 33))
    sampler = build_sampler("pgdm", steps=50)
    op = build_operator("super_resolution", scale_factor=4, mode="avgpool")
    y = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = sampler.initial_state((1, 3, 16, 16), op, y, 0.0, g, torch.device("cpu"), torch.float64)
    z = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sampler.diffusion.alphas_cumprod[-1].item()
    assert torch.allclose(x, math.sqrt(a) * op.pinv(y) + math.sqrt(1 - a) * z, rtol=0, atol=1e-15)


def test_refusals() -> None:
    sampler = build_sampler("pgdm")
    with pytest.raises(ValueError, match="pgdm needs a linear operator"):
        sampler.check_task(build_operator("phase_retrieval"))
    with pytest.raises(ValueError, match="pgdm needs a linear operator"):
        sampler.check_task(None)
    with pytest.raises(ValueError, match="sampler.guidance"):
        build_sampler("pgdm", guidance="dps")
    with pytest.raises(ValueError, match="sampler.start"):
        build_sampler("pgdm", start="y")


@pytest.mark.parametrize("case", GMM_CASES)
@pytest.mark.parametrize("guidance", ["pinv", "noisy"])
def test_low_noise_posterior(gmm_cases, case: str, guidance: str) -> None:
    """sigma_y = 0.05, 100 steps, eta 1, the code's weight: measured SWD pinv 0.028 / 0.045 / 0.034,
    noisy 0.026 / 0.039 / 0.032 against bounds 0.060 / 0.078 / 0.071."""
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    assert gmm_swd(build_sampler("pgdm", steps=100, guidance=guidance), model, op, y, ref) < bound


@pytest.fixture(scope="module")
def noisy_cases():
    """The same prior and problems with sigma_y = 0.3, the bound made as in conftest."""
    return make_gmm_cases(0.3)


@pytest.mark.parametrize("case", GMM_CASES)
def test_noise_aware_form_handles_noisy_measurements(noisy_cases, case: str) -> None:
    """sigma_y = 0.3, 50 steps: the paper's (r_t^2 A A^T + sigma_y^2 I)^-1 guidance measured SWD
    0.049 / 0.065 / 0.063 against bounds 0.078 / 0.097 / 0.091; the code's pseudoinverse form fits
    the noise (0.172 / 0.411 / 0.254)."""
    model, cases = noisy_cases
    op, y, ref, bound = cases[case]

    def swd(guidance: str) -> float:
        x = build_sampler("pgdm", steps=50, guidance=guidance).sample(
            model, op, y, sigma=0.3, shape=(N_SAMPLES, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        return sliced_wasserstein(x, ref)

    assert swd("noisy") < bound < swd("pinv")


@pytest.mark.parametrize("guidance", ["pinv", "noisy"])
def test_batched_equals_image_by_image(gmm_cases, guidance: str) -> None:
    """With one generator per image, each image of a batch gets its batch-of-one result: the VJP and
    the CG solve (per-image step sizes) do not couple the images."""
    model, cases = gmm_cases
    op, y, _, _ = cases["random_matrix"]
    sampler = build_sampler("pgdm", steps=10, guidance=guidance)
    gens = lambda idx: [torch.Generator().manual_seed(100 + k) for k in idx]  # noqa: E731
    batched = sampler.sample(model, op, y[:3], sigma=0.05, shape=(3, *SHAPE), generator=gens(range(3)), dtype=torch.float64)
    for k in range(3):
        single = sampler.sample(model, op, y[k:k + 1], sigma=0.05, shape=(1, *SHAPE), generator=gens([k]), dtype=torch.float64)
        assert (batched[k] - single[0]).abs().max().item() < 1e-10
