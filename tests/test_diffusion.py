"""The diffusion core against closed forms: schedules, respacing, q_sample, posterior, DDPM/DDIM."""
from __future__ import annotations

import math

import pytest
import torch

from guided_diffusion.diffusion import GaussianDiffusion, get_named_beta_schedule, space_timesteps

LINEAR = GaussianDiffusion.from_config("linear", 1000)


def test_linear_schedule_values() -> None:
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15) and betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    # Reference values of this schedule (DPS/DiffPIR notes): abar_999 = 4.036e-5, sigma_bar_999 = 157.41.
    ac = LINEAR.alphas_cumprod
    assert ac[-1].item() == pytest.approx(4.036e-5, rel=1e-3)
    assert math.sqrt((1 - ac[-1]) / ac[-1]) == pytest.approx(157.41, rel=1e-4)
    # Fewer training steps stretch the range so the total noise is comparable.
    assert get_named_beta_schedule("linear", 500)[-1].item() == pytest.approx(0.04)


def test_cosine_schedule_matches_its_alpha_bar() -> None:
    betas = get_named_beta_schedule("cosine", 1000)
    ac = torch.cumprod(1 - betas, 0)
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert ac[t].item() == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-10)
    assert betas.max().item() == pytest.approx(0.999)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        get_named_beta_schedule("quadratic", 10)


def test_space_timesteps_semantics() -> None:
    assert space_timesteps(1000, "ddim100") == set(range(0, 1000, 10))
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "1000") == set(range(1000))
    s250 = sorted(space_timesteps(1000, "250"))
    assert len(s250) == 250 and s250[0] == 0 and s250[-1] == 999
    # stride (1000-1)/(250-1) = 4.012..., positions rounded
    assert s250[:4] == [0, 4, 8, 12] and s250[125] == round(125 * 999 / 249)
    # Sections: 10 -> sizes 4, 3, 3; counts 2, 1, 3.
    assert space_timesteps(10, "2,1,3") == {0, 3, 4, 7, 8, 9}
    assert space_timesteps(10, [2, 1, 3]) == {0, 3, 4, 7, 8, 9}
    with pytest.raises(ValueError, match="cannot take 6"):
        space_timesteps(10, "6,1")
    with pytest.raises(ValueError, match="evenly strided"):
        space_timesteps(1000, "ddim999")


@pytest.mark.parametrize("respacing", ["250", "ddim50", "10,20,5", "1"])
def test_respaced_schedule_keeps_alphas_cumprod(respacing: str) -> None:
    d = GaussianDiffusion.from_config("linear", 1000, respacing)
    kept = d.timestep_map
    assert d.num_timesteps == len(kept) and kept.tolist() == sorted(kept.tolist())
    assert torch.allclose(d.alphas_cumprod, LINEAR.alphas_cumprod[kept], rtol=1e-12, atol=0)
    assert torch.equal(d.model_t(torch.arange(d.num_timesteps)), kept)


def test_eps_x0_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    x_t = LINEAR.q_sample(x0, t, noise=eps)
    assert torch.allclose(LINEAR.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-9)
    assert torch.allclose(LINEAR.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-9)


def test_q_sample_moments() -> None:
    """Mean sqrt(abar) x0 and variance 1 - abar, within 5 standard errors (n = 200k)."""
    n, t = 200_000, 300
    x0 = torch.full((n, 1, 1, 1), 0.7, dtype=torch.float64)
    x_t = LINEAR.q_sample(x0, torch.full((n,), t), generator=torch.Generator().manual_seed(0))
    ac = LINEAR.alphas_cumprod[t].item()
    var = 1 - ac
    assert abs(x_t.mean().item() - math.sqrt(ac) * 0.7) < 5 * math.sqrt(var / n)
    assert abs(x_t.var().item() - var) < 5 * var * math.sqrt(2 / n)


@pytest.mark.parametrize("d", [LINEAR, GaussianDiffusion.from_config("cosine", 1000, "ddim20")], ids=["linear", "cosine-ddim20"])
def test_posterior_is_bayes_rule(d: GaussianDiffusion) -> None:
    """q(x_{t-1} | x_t, x0) from Bayes on scalars: prior N(sqrt(abar') x0, 1 - abar'),
    likelihood x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t)."""
    x0, xt = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.1, dtype=torch.float64)
    for t in range(1, d.num_timesteps, max(1, d.num_timesteps // 37)):
        ac_prev, alpha, beta = d.alphas_cumprod_prev[t], d.alphas[t], d.betas[t]
        prec = 1 / (1 - ac_prev) + alpha / beta
        var = 1 / prec
        mean = var * (ac_prev.sqrt() * x0 / (1 - ac_prev) + alpha.sqrt() * xt / beta)
        m, v, logv = d.q_posterior(x0.reshape(1, 1), xt.reshape(1, 1), torch.tensor([t]))
        assert v.item() == pytest.approx(var.item(), rel=1e-10)
        assert m.item() == pytest.approx(mean.item(), rel=1e-10, abs=1e-12)
        assert logv.item() == pytest.approx(math.log(var.item()), rel=1e-10)
    # t = 0: the posterior is the point x0, its log-variance clipped to the t = 1 value.
    m, v, logv = d.q_posterior(x0.reshape(1, 1), xt.reshape(1, 1), torch.tensor([0]))
    assert m.item() == pytest.approx(x0.item()) and v.item() == 0.0
    assert logv.item() == pytest.approx(math.log(d.posterior_variance[1].item()))


def test_learned_range_interpolates_log_variances() -> None:
    t = torch.tensor([0, 5, 999])
    like = torch.zeros(3, 1)
    hi = LINEAR.model_log_variance(t, like, "learned_range", torch.ones(3, 1))
    lo = LINEAR.model_log_variance(t, like, "learned_range", -torch.ones(3, 1))
    mid = LINEAR.model_log_variance(t, like, "learned_range", torch.zeros(3, 1))
    assert torch.allclose(hi[:, 0], LINEAR.betas[t].log().float())
    assert torch.allclose(lo[:, 0], LINEAR.posterior_log_variance_clipped[t].float())
    assert torch.allclose(mid, (hi + lo) / 2)
    small = LINEAR.model_log_variance(t, like, "fixed_small")
    large = LINEAR.model_log_variance(t, like, "fixed_large")
    assert torch.allclose(small, lo) and torch.allclose(large[1:], hi[1:])
    assert large[0].item() == pytest.approx(math.log(LINEAR.posterior_variance[1].item()), rel=1e-6)


def _gaussian_eps_model(d_train: GaussianDiffusion, mu: float, s: float):
    """Exact eps for x0 ~ N(mu, s^2): eps = sqrt(1-abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar)."""
    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ac = d_train.alphas_cumprod[t].reshape(-1, *([1] * (x_t.dim() - 1))).to(x_t.dtype)
        return (1 - ac).sqrt() * (x_t - ac.sqrt() * mu) / (ac * s ** 2 + 1 - ac)
    return model


@pytest.mark.parametrize("respacing", ["ddim1000", "ddim100", "ddim10"])
def test_ddim_eta0_on_gaussian_prior_is_the_closed_form_linear_map(respacing: str) -> None:
    """With exact eps for N(mu, s^2), one DDIM step maps z_t = (x_t - sqrt(abar) mu)/sqrt(v_t),
    v_t = abar s^2 + 1 - abar, to z_{t-1} = z_t (sqrt(abar abar') s^2 + sqrt((1-abar)(1-abar'))) /
    sqrt(v_t v_{t-1}); so x_0 = mu + G (x_T - sqrt(abar_T) mu) with G the product of the step
    factors. The sampler must match that to 1e-10, and G -> 1 as steps grow
    (Cauchy-Schwarz: each factor <= 1, equality in the continuous limit)."""
    mu, s = 0.3, 0.2
    d = GaussianDiffusion.from_config("linear", 1000, respacing)
    model = _gaussian_eps_model(LINEAR, mu, s)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1, 1, 1)
    ac_T = d.alphas_cumprod[-1]
    gain = torch.tensor(1.0, dtype=torch.float64)
    x_t = x.clone()
    for i in reversed(range(d.num_timesteps)):
        t = d.timesteps(7, i)
        out = d.p_mean_variance(model, x_t, t, clip_denoised=False)
        x_t = d.ddim_step(out["x0_hat"], d.predict_eps_from_x0(x_t, t, out["x0_hat"]), t, eta=0.0)
        a, a_prev = d.alphas_cumprod[i], d.alphas_cumprod_prev[i]
        num = (a * a_prev).sqrt() * s ** 2 + ((1 - a) * (1 - a_prev)).sqrt()
        v, v_prev = a * s ** 2 + 1 - a, a_prev * s ** 2 + 1 - a_prev
        gain = gain * num / (v * v_prev).sqrt()
    # z_0 = gain * z_T and x_0 = mu + s z_0 (v_0 of the final "abar_prev = 1" level is s^2).
    z_T = (x - ac_T.sqrt() * mu) / (ac_T * s ** 2 + 1 - ac_T).sqrt()
    expected = mu + s * gain * z_T
    assert (x_t - expected).abs().max().item() < 1e-10
    assert gain.item() <= 1.0
    if respacing == "ddim1000":  # measured 0.9925: the large steps near t = T contract the most
        assert gain.item() > 0.99


def test_ddpm_step_variance_recursion_on_gaussian_prior() -> None:
    """Ancestral sampling with fixed_small variance and exact eps for N(mu, s^2) is linear-Gaussian:
    x_{t-1} - sqrt(abar') mu = k_t (x_t - sqrt(abar) mu) + sqrt(pv_t) n with
    k_t = coef1 sqrt(abar) s^2 / v_t + coef2, so Var_{t-1} = k_t^2 Var_t + pv_t exactly.
    The empirical mean and variance of 40k samples over 100 respaced steps must match the
    recursion within 5 standard errors."""
    mu, s, n = -0.2, 0.3, 40_000
    d = GaussianDiffusion.from_config("linear", 1000, "100")
    model = _gaussian_eps_model(LINEAR, mu, s)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    var = torch.tensor(1.0, dtype=torch.float64)
    for i in reversed(range(d.num_timesteps)):
        t = d.timesteps(n, i)
        out = d.p_mean_variance(model, x, t, clip_denoised=False, var_type="fixed_small")
        x = d.ddpm_step(out["mean"], out["log_variance"], t, torch.randn(x.shape, generator=g, dtype=x.dtype))
        a = d.alphas_cumprod[i]
        k = d.posterior_mean_coef1[i] * a.sqrt() * s ** 2 / (a * s ** 2 + 1 - a) + d.posterior_mean_coef2[i]
        var = k ** 2 * var + (d.posterior_variance[i] if i > 0 else 0.0)
    # x_T ~ N(0, 1) instead of N(sqrt(abar_T) mu, v_T): the mean offset decays by prod(k) (tiny).
    assert abs(x.mean().item() - mu) < 5 * math.sqrt(var.item() / n) + 1e-3
    assert abs(x.var().item() - var.item()) < 5 * var.item() * math.sqrt(2 / n)
    # fixed_small drops the c1^2 Var(x0 | x_t) part of the true reverse variance: it undershoots s^2.
    assert 0.7 * s ** 2 < var.item() < s ** 2


def test_single_step_grid_is_usable() -> None:
    """steps = 1 keeps only t = 0: one deterministic step to x0_hat, no empty schedule arrays."""
    d = GaussianDiffusion.from_config("linear", 1000, "1")
    assert d.num_timesteps == 1 and torch.isfinite(d.posterior_log_variance_clipped).all()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = d.timesteps(2, 0)
    out = d.p_mean_variance(lambda x_t, tt: torch.zeros_like(x_t), x, t, clip_denoised=False)
    assert torch.allclose(out["mean"], out["x0_hat"], atol=1e-6)  # at t = 0 the mean is x0_hat
