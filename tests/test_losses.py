"""The ADM training objective against closed forms: Gaussian KL, discretized likelihood, L_simple,
the stop-gradient split of the hybrid loss, and the VLB of a model that knows the answer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from guided_diffusion.diffusion import GaussianDiffusion
from guided_diffusion.losses import (discretized_gaussian_log_likelihood, normal_kl, training_losses,
                                     uniform_timesteps, vlb_terms)

LEVELS = np.linspace(-1, 1, 256)   # the 8-bit levels -1 + 2k/255


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion.from_config("linear", 1000)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -1.2, 2.0), (2.0, 3.0, 1.5, 0.7)])
def test_normal_kl_of_scalar_gaussians(m1: float, s1: float, m2: float, s2: float) -> None:
    got = normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, 2 * math.log(s1), m2, 2 * math.log(s2))))
    normal = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(normal(torch.tensor(m1, dtype=torch.float64), s1),
                                            normal(torch.tensor(m2, dtype=torch.float64), s2))
    # KL as the integral of p log(p / q), independently of any closed form.
    p, q = stats.norm(m1, s1), stats.norm(m2, s2)
    integral = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), m1 - 12 * s1, m1 + 12 * s1)[0]
    assert float(got) == pytest.approx(float(ref), abs=1e-12)
    assert float(got) == pytest.approx(integral, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mean,scale", [(0.0, 0.1), (0.9, 0.01), (-0.99, 1e-3), (0.3, 2.0), (1.5, 0.05), (0.5, 1e-4)])
def test_discretized_likelihood_sums_to_one(dtype: torch.dtype, mean: float, scale: float) -> None:
    x = torch.tensor(LEVELS, dtype=dtype)
    logp = discretized_gaussian_log_likelihood(x, torch.tensor(mean, dtype=dtype), torch.tensor(math.log(scale), dtype=dtype))
    assert abs(float(logp.exp().sum()) - 1.0) < 1e-6


def test_discretized_likelihood_bins_match_the_normal_cdf() -> None:
    """Interior bins are Phi differences over x +- 1/255, the end bins reach to -inf / +inf; the
    upper-tail bin (both CDFs within 1e-9 of 1) and the far lower-tail bin (mass ~1e-96) keep
    their relative precision."""
    mean, scale = 0.2, 0.05
    dist = stats.norm(mean, scale)
    cases = {0: dist.cdf(-1 + 1 / 255), 255: dist.sf(1 - 1 / 255), 140: dist.cdf(LEVELS[140] + 1 / 255) - dist.cdf(LEVELS[140] - 1 / 255),
             193: dist.sf(LEVELS[193] - 1 / 255) - dist.sf(LEVELS[193] + 1 / 255),
             20: dist.cdf(LEVELS[20] + 1 / 255) - dist.cdf(LEVELS[20] - 1 / 255)}
    x = torch.tensor(LEVELS[list(cases)])
    logp = discretized_gaussian_log_likelihood(x, torch.tensor(mean, dtype=torch.float64), torch.tensor(math.log(scale), dtype=torch.float64))
    assert 1e-12 < cases[193] < 1e-9 and 0 < cases[20] < 1e-90
    np.testing.assert_allclose(logp.numpy(), np.log(list(cases.values())), rtol=1e-9)


def test_discretized_likelihood_gradients_are_finite_in_float32() -> None:
    x = torch.tensor(LEVELS, dtype=torch.float32).repeat(3)
    mean = torch.tensor([-3.0, 0.0, 3.0]).repeat_interleave(256).requires_grad_(True)
    log_scale = torch.tensor([math.log(1e-3), math.log(0.02), math.log(0.5)]).repeat_interleave(256).requires_grad_(True)
    logp = discretized_gaussian_log_likelihood(x, mean, log_scale)
    logp.sum().backward()
    assert bool(torch.isfinite(logp).all() and torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all())


def test_eps_part_of_the_hybrid_loss_is_the_plain_mse(diffusion: GaussianDiffusion, gen: torch.Generator) -> None:
    x0 = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    noise, eps_hat = torch.randn(2, 3, 3, 8, 8, generator=gen)
    var_values = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    t = torch.tensor([0, 10, 999])
    plain = training_losses(diffusion, lambda x, s: eps_hat, x0, t, noise)
    hybrid = training_losses(diffusion, lambda x, s: torch.cat([eps_hat, var_values], 1), x0, t, noise)
    mse = ((noise - eps_hat) ** 2).mean(dim=(1, 2, 3))
    assert set(plain) == {"mse", "loss"} and torch.equal(plain["loss"], plain["mse"])
    torch.testing.assert_close(plain["mse"], mse, rtol=0, atol=0)
    torch.testing.assert_close(hybrid["mse"], mse, rtol=0, atol=0)
    # Eq. 16 with L_vlb estimated as T L_t: lambda T = 0.001 * 1000 = 1.
    torch.testing.assert_close(hybrid["loss"], mse + hybrid["vlb"])
    assert bool((hybrid["vlb"] > 0).all())


def test_vlb_reaches_only_the_variance_head_and_mse_only_the_eps_head(diffusion: GaussianDiffusion, gen: torch.Generator) -> None:
    """Improved DDPM Sec. 3.1: L_vlb sees mu_theta through a stop-gradient."""
    x0 = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(2, 3, 8, 8, generator=gen)
    out = (torch.randn(2, 6, 8, 8, generator=gen) * 0.5).requires_grad_(True)
    t = torch.tensor([0, 300])
    terms = training_losses(diffusion, lambda x, s: out, x0, t, noise)
    g_vlb, = torch.autograd.grad(terms["vlb"].sum(), out, retain_graph=True)
    g_mse, = torch.autograd.grad(terms["mse"].sum(), out)
    assert torch.count_nonzero(g_vlb[:, :3]) == 0 and torch.count_nonzero(g_vlb[:, 3:]) > 0
    assert torch.count_nonzero(g_mse[:, 3:]) == 0 and torch.count_nonzero(g_mse[:, :3]) > 0


def test_vlb_of_the_exact_model(diffusion: GaussianDiffusion, gen: torch.Generator) -> None:
    """eps_hat = the true noise and var_values = -1 (the posterior variance, eq. 15): the KL terms
    vanish, and the t = 0 term is -log2 of the bin mass of N(x0, posterior variance at t = 1)."""
    x0 = torch.from_numpy(LEVELS[[0, 7, 128, 200, 255]]).float().reshape(1, 1, 1, 5).repeat(4, 3, 5, 1)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 1, 500, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    vlb = vlb_terms(diffusion, x0, x_t, t, noise, -torch.ones_like(x0))
    assert float(vlb[1:].abs().max()) < 1e-5
    # x0_hat = x0 up to float32 rounding of the x_t round trip, far below the bin width.
    sd = math.sqrt(float(diffusion.posterior_variance[1]))
    interior = stats.norm.cdf(1 / 255, scale=sd) - stats.norm.cdf(-1 / 255, scale=sd)
    edge = stats.norm.cdf(1 / 255, scale=sd)
    expected = -(2 * math.log(edge) + 3 * math.log(interior)) / 5 / math.log(2)
    assert float(vlb[0]) == pytest.approx(expected, rel=1e-3)


def test_uniform_timesteps_cover_the_grid(gen: torch.Generator) -> None:
    t = uniform_timesteps(GaussianDiffusion.from_config("cosine", 10), 5000, gen)
    assert t.dtype == torch.long and set(t.tolist()) == set(range(10))
    counts = torch.bincount(t, minlength=10).float()
    assert float((counts / 500 - 1).abs().max()) < 0.15
