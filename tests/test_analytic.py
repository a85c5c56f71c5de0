"""The Gaussian-mixture prior: exact eps and posteriors, and DDPM sampling reproducing the prior."""
from __future__ import annotations

import math

import pytest
import torch

from guided_diffusion.analytic import GaussianMixture, GaussianMixtureDenoiser, sliced_wasserstein
from guided_diffusion.diffusion import GaussianDiffusion
from samplers import build_sampler

SHAPE = (3, 4, 4)
LINEAR = GaussianDiffusion.from_config("linear", 1000)


@pytest.fixture(scope="module")
def prior() -> GaussianMixture:
    return GaussianMixture.random(SHAPE, n_components=3, generator=torch.Generator().manual_seed(0))


def test_eps_is_minus_scaled_score_of_noised_marginal(prior: GaussianMixture) -> None:
    """Tweedie: eps(x_t, t) = -sqrt(1 - abar_t) grad log p_t(x_t), checked against autograd of log p_t."""
    model = GaussianMixtureDenoiser(prior, LINEAR.alphas_cumprod)
    g = torch.Generator().manual_seed(1)
    for t in (0, 50, 400, 999):
        ac = LINEAR.alphas_cumprod[t]
        x = LINEAR.q_sample(prior.sample(5, g), torch.full((5,), t), generator=g).requires_grad_(True)
        (grad,) = torch.autograd.grad(prior.log_prob(x, ac).sum(), x)
        eps = model(x.detach(), torch.full((5,), t))
        assert torch.allclose(eps, -(1 - ac).sqrt() * grad, atol=1e-10)


def test_eps_at_pure_noise_is_the_input(prior: GaussianMixture) -> None:
    """At t = 999 (abar = 4e-5) the marginal is N(0, I) up to O(sqrt(abar)), so eps(x) ~ x: a check
    that does not reuse the mixture algebra of the model."""
    model = GaussianMixtureDenoiser(prior, LINEAR.alphas_cumprod)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eps = model(x, torch.full((4,), 999))
    assert (eps - x).abs().max().item() < 0.01


def test_posterior_density_is_bayes_rule(prior: GaussianMixture) -> None:
    """log p(x | y) = log p(x) + log N(y; A x, sigma^2 I) - log p(y) for every x: the difference of
    the two sides is one constant (log p(y)) across random points, to 1e-9."""
    g = torch.Generator().manual_seed(3)
    d, m, sigma = prior.dim, 20, 0.1
    A = torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    x_true = prior.sample(1, g).reshape(-1)
    y = A @ x_true + sigma * torch.randn(m, generator=g, dtype=torch.float64)
    post = prior.posterior(A, y, sigma)
    xs = torch.cat([post.sample(20, g), prior.sample(20, g)])
    flat = xs.reshape(len(xs), -1)
    loglik = -0.5 * ((y - flat @ A.T) ** 2).sum(1) / sigma ** 2 - m * math.log(sigma * math.sqrt(2 * math.pi))
    log_evidence = prior.log_prob(xs) + loglik - post.log_prob(xs)
    assert (log_evidence - log_evidence.mean()).abs().max().item() < 1e-9


def test_sliced_wasserstein_of_shifted_gaussians() -> None:
    """For N(0, I) vs N(c, I) every projection is a 1-D shift by <c, theta>, so SW^2 = E<c,theta>^2
    = |c|^2 / d for uniform directions; with 20k samples the estimate is within 10%."""
    g = torch.Generator().manual_seed(4)
    d = 8
    c = torch.full((d,), 0.5, dtype=torch.float64)
    a = torch.randn(20_000, d, generator=g, dtype=torch.float64)
    b = torch.randn(20_000, d, generator=g, dtype=torch.float64) + c
    assert sliced_wasserstein(a, b, n_projections=512) == pytest.approx(float(c.norm()) / math.sqrt(d), rel=0.1)


def test_ddpm_sampling_reproduces_the_prior(prior: GaussianMixture) -> None:
    """1000-step ancestral DDPM with the exact denoiser draws from the prior.

    Bound: 1.5 x the SWD between two independent exact sample sets of the same size (N = 2000),
    i.e. the sampler may be no worse than finite-sample noise plus 50%. Measured: baseline 0.018,
    DDPM 0.013. A DDPM whose schedule differs from the model's (cosine instead of linear) measured
    0.040 and must fail the bound, and so must a respaced sampler that forgets the timestep map.
    """
    n = 2000
    model = GaussianMixtureDenoiser(prior, LINEAR.alphas_cumprod)
    ref = prior.sample(n, torch.Generator().manual_seed(10))
    bound = 1.5 * sliced_wasserstein(ref, prior.sample(n, torch.Generator().manual_seed(11)))

    def swd(sampler, model_fn) -> float:
        x = sampler.sample(model_fn, shape=(n, *SHAPE), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
        return sliced_wasserstein(x, ref)

    assert swd(build_sampler("ddpm", steps=1000, clip_denoised=False), model) < bound
    assert swd(build_sampler("ddpm", steps=100, schedule="cosine", clip_denoised=False), model) > bound
    respaced = build_sampler("ddpm", steps=100, clip_denoised=False)
    respaced.diffusion.timestep_map = torch.arange(100)  # the classic bug: respaced index fed as t
    assert swd(respaced, model) > bound
