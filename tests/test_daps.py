"""DAPS: the VP <-> EDM mapping, the sigma schedules' closed forms, the Langevin step size, the denoiser
against a Gaussian prior's exact posterior mean, the Langevin target, refusals, resume, and the
Gaussian-mixture posterior. The official code's output is replayed in tests/test_equivalence.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from guided_diffusion.analytic import GaussianMixture, GaussianMixtureDenoiser, sliced_wasserstein
from guided_diffusion.diffusion import GaussianDiffusion, vp_alphas_cumprod, vp_timestep
from operators import MatrixOperator, build_operator
from samplers import build_sampler
from samplers.daps import annealing_sigmas, poly_sigmas

from conftest import GMM_CASES, SHAPE, SIGMA, run_config_on_tiny_adm

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def test_vp_edm_mapping() -> None:
    """vp_timestep solves 0.1 s + 19.9 s^2 / 2 = log(1 + sigma^2), t = 999 s, a float: sigma 100 ->
    956.1496 (the official network timestep, golden `unet_timesteps`), 0.01 -> 0.92; and
    vp_alphas_cumprod inverts it: abar = 1 / (1 + sigma^2)."""
    sigma = torch.tensor([100.0, 39.129025, 1.0, 0.01], dtype=torch.float64)
    t = vp_timestep(sigma)
    assert t[0].item() == pytest.approx(956.1496, abs=1e-4) and t[-1].item() == pytest.approx(0.92, abs=5e-3)
    s = t / 999
    assert torch.allclose(0.1 * s + 19.9 * s ** 2 / 2, torch.log1p(sigma ** 2), rtol=1e-14, atol=0)
    assert torch.allclose(vp_alphas_cumprod(t), 1 / (1 + sigma ** 2), rtol=1e-12, atol=0)
    assert not torch.equal(t, t.round())


def test_sigma_schedules() -> None:
    """Annealing: N + 1 poly-7 points from 100 to 0.1, the last dropped, 0 appended (golden
    sigma_steps for N = 5; the DAPS-1K grid ends at 0.1060, never 0.1). ODE grid: steps + 1 points
    from sigma to ode_sigma_min."""
    assert annealing_sigmas(100.0, 0.1, 5).tolist() == pytest.approx([100, 39.129025, 13.237129, 3.6695592,
                                                                     0.76185411, 0], rel=1e-7)
    one_k = annealing_sigmas(100.0, 0.1, 200)
    assert len(one_k) == 201 and one_k[-1] == 0 and one_k[-2] == pytest.approx(0.1060, abs=1e-4)
    grid = poly_sigmas(3.0, 0.01, 5, 7.0)
    assert len(grid) == 6 and grid[0] == pytest.approx(3.0, rel=1e-15) and grid[-1] == pytest.approx(0.01, rel=1e-13)
    roots = grid ** (1 / 7)
    assert max(abs(d - (roots[1] - roots[0])) for d in roots[1:] - roots[:-1]) < 1e-14  # equal steps in sigma^(1/7)


def test_langevin_step_sizes() -> None:
    """lr_k = lr (1 + k / (N + 1) (lr_min_ratio - 1)): 0.34 lr at the last of 5 steps, never lr_min_ratio lr."""
    sampler = build_sampler("daps", steps=5, lr=1e-4, lr_min_ratio=0.01)
    assert [sampler.langevin_lr(k) / 1e-4 for k in range(5)] == pytest.approx(
        [1 - 0.99 * k / 6 for k in range(5)], rel=1e-14)
    assert sampler.langevin_lr(4) == pytest.approx(0.34e-4, rel=1e-12)


def test_denoiser_is_the_exact_posterior_mean() -> None:
    """For a Gaussian prior N(m, S) and its exact eps-model at float t, D(x, u) = x - u eps(x / sqrt(1 +
    u^2), vp_timestep(u)) is E[x0 | x0 + u n = x] = m + S (S + u^2 I)^-1 (x - m) (float64)."""
    g = torch.Generator().manual_seed(0)
    d = 12
    root = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    cov, mean = root @ root.T + 0.05 * torch.eye(d, dtype=torch.float64), torch.randn(1, d, generator=g, dtype=torch.float64)
    prior = GaussianMixture(torch.ones(1, dtype=torch.float64), mean, cov[None], (3, 2, 2))
    model = GaussianMixtureDenoiser(prior, GaussianDiffusion.from_config().alphas_cumprod)
    sampler = build_sampler("daps", steps=5)
    for u in (80.0, 2.5, 0.3, 0.01):
        x = mean.reshape(1, 3, 2, 2) + u * torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
        exact = mean + (x.reshape(4, d) - mean) @ torch.linalg.solve(cov + u * u * torch.eye(d, dtype=torch.float64), cov)
        assert (sampler.denoise(model, x, u).reshape(4, d) - exact).abs().max().item() < 1e-10 * max(1.0, u)


def test_langevin_samples_its_target() -> None:
    """The Langevin chain targets exp(-||A x - y||^2 / tau^2 - ||x - x0_hat||^2 / (2 s^2)) (the squared norm
    without 1/2): Gaussian with precision P = 2 A^T A / tau^2 + I / s^2 and mean P^-1 (2 A^T y / tau^2 +
    x0_hat / s^2). 4000 chains, 1500 steps of lr 1e-3 (16 relaxation times of the slowest direction):
    mean within 0.01 and variances within 8 % (measured 0.0035 and 2.6 %; the Euler-Maruyama bias of
    a variance is about lr P / 2 <= 2.4 % here)."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 4, generator=g, dtype=torch.float64)
    op, shape = MatrixOperator(A, (1, 2, 2)), (4000, 1, 2, 2)
    y, x0_hat = torch.randn(1, 3, generator=g, dtype=torch.float64), torch.randn(1, 1, 2, 2, generator=g, dtype=torch.float64)
    tau, s = 0.5, 0.3
    sampler = build_sampler("daps", steps=5, langevin_steps=1500, tau=tau)
    x = sampler.langevin(op, y.expand(4000, -1), x0_hat.expand(shape), s, 1e-3, torch.Generator().manual_seed(2))
    precision = 2 * A.T @ A / tau ** 2 + torch.eye(4, dtype=torch.float64) / s ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ (2 * A.T @ y[0] / tau ** 2 + x0_hat.reshape(4) / s ** 2)
    flat = x.reshape(4000, 4)
    assert (flat.mean(0) - mean).abs().max().item() < 0.01
    assert ((flat.var(0) / cov.diagonal()) - 1).abs().max().item() < 0.08


def test_refusals_and_nfe() -> None:
    with pytest.raises(ValueError, match="ode_sigma_min < sigma_min < sigma_max"):
        build_sampler("daps", sigma_min=200.0)
    with pytest.raises(ValueError, match=r"'sampler.lr' must be in \(0, inf\)"):
        build_sampler("daps", lr=0.0)
    with pytest.raises(ValueError, match=r"'sampler.lr_min_ratio' must be in \[0, 1\]"):
        build_sampler("daps", lr_min_ratio=2.0)
    with pytest.raises(ValueError, match="schedule 'cosine' is not supported"):
        build_sampler("daps", schedule="cosine")
    with pytest.raises(ValueError, match="needs a measurement operator"):
        build_sampler("daps").check_task(None)
    assert build_sampler("daps").nfe == 1000  # DAPS-1K
    build_sampler("daps").check_task(build_operator("phase_retrieval"))  # nonlinear operators are fine


def test_resume_is_exact() -> None:
    """The annealing state is x_t alone: resuming from a callback's state and generator state is bit-exact."""
    prior = GaussianMixture.random(SHAPE, 3, torch.Generator().manual_seed(0))
    model = GaussianMixtureDenoiser(prior, GaussianDiffusion.from_config().alphas_cumprod)
    op = build_operator("inpainting", mask_type="random", image_size=4, mask_prob_range=[0.5, 0.5]).double()
    y = op.forward(prior.sample(2, torch.Generator().manual_seed(5)))
    sampler = build_sampler("daps", steps=6, ode_steps=2, langevin_steps=3, lr=1e-3)
    seen = {}
    gen = torch.Generator().manual_seed(3)
    out = sampler.sample(model, op, y, shape=(2, *SHAPE), generator=gen,
                         callback=lambda i, x, x0: seen.setdefault(i, (x.clone(), x0.clone(), gen.get_state())))
    assert torch.equal(out, seen[0][1])  # the output is the last Langevin result
    again = torch.Generator().manual_seed(0)
    again.set_state(seen[3][2])
    assert torch.equal(sampler.sample(model, op, y, shape=(2, *SHAPE), generator=again, start=(2, seen[3][0])), out)


@pytest.mark.parametrize("case", GMM_CASES)
def test_gaussian_mixture_posterior(gmm_cases, case: str) -> None:
    """50 annealing x 5 ODE x 50 Langevin steps, tau = sqrt(2) sigma_y (the exact likelihood), lr 2e-3
    decaying to 1e-4, sigma_min 0.02, ode_sigma_min 0.002 (the DAPS-1K budget with the images' lr 1e-4
    and sigma_min 0.1 barely moves these 48-pixel problems: SWD 0.11-0.20). DAPS's Gaussian
    p(x0 | x_t) = N(x0_hat, sigma_t^2) is an approximation: measured SWD 0.062 / 0.108 / 0.102, spread
    0.155 / 0.258 / 0.240 against the posterior's 0.117 / 0.175 / 0.159, so the bound is 0.13, half the
    SWD of sampling the prior (0.25-0.28), not the 4 x floor (0.06-0.08) the diffusion samplers meet."""
    model, cases = gmm_cases
    op, y, ref, _ = cases[case]
    sampler = build_sampler("daps", steps=50, langevin_steps=50, tau=math.sqrt(2) * SIGMA, lr=2e-3,
                            lr_min_ratio=0.05, sigma_min=0.02, ode_sigma_min=0.002)
    x = sampler.sample(model, op, y, sigma=SIGMA, shape=(len(ref), *SHAPE), generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64)
    assert sliced_wasserstein(x, ref) < 0.13


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "daps").glob("*.yaml")), ids=lambda p: p.stem)
def test_config_runs_on_the_tiny_adm(path) -> None:
    """Each shipped config, shrunk to 32x32 and 2 x 5 x 2 steps, runs through `sample` on the tiny random ADM."""
    run_config_on_tiny_adm(path, steps=2, langevin_steps=2)


def test_divergence_names_the_annealing_step() -> None:
    """A Langevin step far too large (lr 1 with tau 0.01) diverges in the first annealing step; the
    error names it by annealing step and sigma, not by a DDPM timestep DAPS never visits."""
    from guided_diffusion import TINY_FLAGS, create_model
    from samplers import NonFiniteError

    model = create_model(**TINY_FLAGS).eval().requires_grad_(False)
    op = build_operator("inpainting", mask_type="random", image_size=32, mask_prob_range=[0.5, 0.5])
    y = op(torch.zeros(1, 3, 32, 32))
    sampler = build_sampler("daps", steps=3, ode_steps=1, langevin_steps=20, lr=1.0)
    with pytest.raises(NonFiniteError, match=r"annealing step 1 of 3 \(sigma = 100\)"):
        sampler.sample(model, op, y, sigma=0.0, shape=(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
