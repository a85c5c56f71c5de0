"""DiffPIR: the code's timestep lists and rho_t, the data step against dense least squares, noiseless
inpainting, and sampling on the exact Gaussian-mixture posterior."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import SHAPE, gmm_swd as _swd

from guided_diffusion.analytic import GaussianMixture, GaussianMixtureDenoiser
from guided_diffusion.diffusion import GaussianDiffusion
from operators import MatrixOperator, build_operator
from operators.resize import bicubic_upsample, opencv_cubic_matrix
from samplers import build_sampler
from samplers.diffpir import diffpir_timesteps, sr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_timesteps_match_the_code() -> None:
    """Lists computed from the code's seq rules (reference notes, DIFFPIR_GDP.md 1.2)."""
    quad20 = diffpir_timesteps(20, "quad")
    assert quad20[:8] == [999, 770, 675, 602, 541, 487, 438, 393]
    assert quad20[-6:] == [141, 111, 82, 54, 26, 0] and len(quad20) == 20
    quad100 = diffpir_timesteps(100, "quad")
    assert quad100[:5] == [999, 899, 857, 825, 798] and quad100[-5:] == [20, 15, 10, 5, 0] and len(quad100) == 100
    uniform = diffpir_timesteps(100, "uniform")
    assert uniform == [999] + list(range(989, 8, -10)) + [0] and len(uniform) == 101
    # t_start skips the steps above it; the grid keeps the training abar at the visited steps.
    s = build_sampler("diffpir", steps=20, t_start=500)
    assert s.timesteps[0] == 487 and s.nfe == 15
    ac = GaussianDiffusion.from_config().alphas_cumprod
    assert torch.equal(s.diffusion.alphas_cumprod, ac[s.timesteps[::-1]])


def test_rho_schedule_and_sigma_floor() -> None:
    """rho_t = lambda sigma_n^2 / sigma_bar_t^2 with the code's [0, 1] sigma_n = sigma / 2: for
    DiffPIR's sigma = 0.05 (0.1 on [-1, 1]) rho_999 = 1.0e-7 lambda and rho_0 = 25 lambda (the
    reference's figures); sigma = 0 uses the floor 0.001."""
    s = build_sampler("diffpir", lambda_=7.0, steps=100)
    last = s.diffusion.num_timesteps - 1
    assert s.rho(last, 0.1) / 7.0 == pytest.approx(1.0e-7, rel=0.01)
    assert s.rho(0, 0.1) / 7.0 == pytest.approx(25.0, rel=0.01)
    ac = s.diffusion.alphas_cumprod[10].item()
    assert s.rho(10, 0.0) == pytest.approx(7.0 * 1e-6 * ac / (1 - ac), rel=1e-12)
    assert s.rho(10, 0.0) == s.rho(10, 0.002)  # sigma / 2 = floor



def test_step_is_the_codes_update() -> None:
    """One step (zeta 0.3, eta 0.5) against the code's formulas: x0 = clipped x0_hat, data step,
    eps_hat from the *updated* x0, x_t' = sqrt(abar') x0 + sqrt(1 - zeta) (sqrt(1 - abar' - s^2) eps_hat
    + s n1) + sqrt(zeta) sqrt(1 - abar') n2, s = eta sqrt((1 - abar') / (1 - abar)) sqrt(beta_t) with
    the training beta_t; n1 then n2 from the generator."""
    g = torch.Generator().manual_seed(0)
    op = MatrixOperator(torch.randn(5, 12, generator=g, dtype=torch.float64), (3, 2, 2))
    x_t = 3 * torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randn(2, 5, generator=g, dtype=torch.float64)
    sampler = build_sampler("diffpir", lambda_=7.0, zeta=0.3, eta=0.5, steps=20)
    i, model = 10, lambda x, t: torch.tanh(x)
    t = torch.full((2,), i, dtype=torch.long)
    got, x0p = sampler.step(model, x_t, t, op, y, 0.1, torch.Generator().manual_seed(1))
    d = sampler.diffusion
    x0 = d.predict_x0_from_eps(x_t, t, torch.tanh(x_t)).clamp(-1, 1)
    assert torch.equal(x0p, op.prox(x0, y, sampler.rho(i, 0.1)))
    ac, ac_next = d.alphas_cumprod[i].item(), d.alphas_cumprod[i - 1].item()
    eps = (x_t - math.sqrt(ac) * x0p) / math.sqrt(1 - ac)
    s = 0.5 * math.sqrt((1 - ac_next) / (1 - ac)) * math.sqrt(sampler.train_betas[sampler.timesteps[-1 - i]].item())
    gen = torch.Generator().manual_seed(1)
    n1, n2 = (torch.randn(2, 3, 2, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    expected = (math.sqrt(ac_next) * x0p + math.sqrt(0.7) * (math.sqrt(1 - ac_next - s ** 2) * eps + s * n1)
                + math.sqrt(0.3) * math.sqrt(1 - ac_next) * n2)
    assert s > 0 and (got - expected).abs().max().item() < 1e-12


def test_start_is_the_codes() -> None:
    """x = sqrt(abar_s / abar_ty) y + sqrt(1 - abar_s - (abar_s / abar_ty)(1 - abar_ty)) n with s = t_start
    and t_y the step whose sigma_bar is nearest sigma (on [-1, 1])."""
    sampler = build_sampler("diffpir", steps=20, t_start=500)
    ac = GaussianDiffusion.from_config().alphas_cumprod
    sigma_bar = ((1 - ac) / ac).sqrt()
    t_y = int((sigma_bar - 0.1).abs().argmin())
    assert sigma_bar[t_y - 1] < 0.1 < sigma_bar[t_y + 1]
    y = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sampler.initial_state((1, 3, 4, 4), None, y, 0.1, torch.Generator().manual_seed(2), torch.device("cpu"),
                              torch.float64)
    n = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = (ac[500] / ac[t_y]).item()
    expected = math.sqrt(a) * y + math.sqrt(1 - ac[500].item() - a * (1 - ac[t_y].item())) * n
    assert (x - expected).abs().max().item() < 1e-12

def _dense(op, shape) -> torch.Tensor:
    """The matrix of a linear operator, column j = A e_j (float64)."""
    d = math.prod(shape)
    return op.forward(torch.eye(d, dtype=torch.float64).reshape(d, *shape)).reshape(d, -1).T


@pytest.mark.parametrize("name,params,unit_scale", [
    ("gaussian_blur", {"kernel_size": 5, "intensity": 1.0, "boundary": "circular"}, True),
    ("sr_blur_decimation", {"scale_factor": 4}, True),
    ("inpainting", {"mask_type": "random", "image_size": 16, "mask_prob_range": [0.5, 0.5]}, False),
])
def test_data_step_equals_dense_least_squares(name: str, params: dict, unit_scale: bool) -> None:
    """The data step solves min ||y - A x||^2 + rho ||x - x0||^2 exactly (dense normal equation) on
    the code's scale: [0, 1] for blur and blur + decimation (x0 and y mapped by (v + 1) / 2, the
    solution back by 2 v - 1), [-1, 1] for inpainting; rho the same on both."""
    shape = (1, 16, 16)
    op = build_operator(name, **params).double()
    g = torch.Generator().manual_seed(0)
    x_true, x0 = (2 * torch.rand(2, *shape, generator=g, dtype=torch.float64) - 1).split(1)
    y = op.forward(x_true)
    rho = build_sampler("diffpir", lambda_=7.0, steps=100).rho(40, 0.1)
    got = build_sampler("diffpir").data_step(op, x0, y, rho)
    A = _dense(op, shape)
    lhs = A.T @ A + rho * torch.eye(A.shape[1], dtype=torch.float64)
    if unit_scale:
        dense = 2 * torch.linalg.solve(lhs, A.T @ (y.flatten() + 1) / 2 + rho * (x0.flatten() + 1) / 2) - 1
    else:
        dense = torch.linalg.solve(lhs, A.T @ y.flatten() + rho * x0.flatten())
    assert (got.flatten() - dense).abs().max().item() < 1e-9


def test_unit_scale_data_step_is_the_shifted_measurement() -> None:
    """With DiffPIR's x4 table kernel (sum 0.99989770) the [0, 1]-scale step is the [-1, 1] prox
    against y + 1 - sum k (closed form, 1e-12), not the one against y (measured 7.4e-5 apart on
    this case); with the analytic bicubic_sr_kernel (sum 1) the two scales agree to 1e-12."""
    g = torch.Generator().manual_seed(1)
    x_true, x0 = (2 * torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) - 1).split(1)
    sampler = build_sampler("diffpir", lambda_=7.0, steps=100)
    rho = sampler.rho(40, 0.1)
    table = build_operator("sr_blur_decimation", scale_factor=4)
    y = table(x_true)
    got = sampler.data_step(table, x0, y, rho)
    shift = 1 - table.kernel.sum().item()
    assert abs(shift - 1.0229575e-4) < 1e-9
    assert (got - table.prox(x0, y + shift, rho)).abs().max().item() < 1e-12
    assert (got - table.prox(x0, y, rho)).abs().max().item() > 1e-5
    analytic = build_operator("sr_blur_decimation", scale_factor=4, kernel="bicubic_sr_kernel")
    y = analytic(x_true)
    assert (sampler.data_step(analytic, x0, y, rho) - analytic.prox(x0, y, rho)).abs().max().item() < 1e-12


def test_noiseless_inpainting_keeps_observed_pixels() -> None:
    """sigma = 0, inpainting (lambda 1, zeta 1, 20 quad steps: the code's inpainting defaults).

    Last data step (t = 26, grid index 1): on an observed pixel x0' = (y + rho x0) / (1 + rho), so
    |x0' - y| <= 2 rho / (1 + rho) with |x0|, |y| <= 1 and rho = 1e-6 / sigma_bar_26^2 = 1.0e-4 (the
    floor). The output is that step's update x = sqrt(abar_0) x0' + sqrt(1 - abar_0) n (zeta = 1,
    n ~ N(0, 1)), unchanged by the last visited step, so its RMS error on observed pixels is at most
    (1 - sqrt(abar_0)) + 2 rho + 0.01 * 1.05 (5% margin: 5 standard errors of an RMS over 8 x 3 x 200 draws of n).
    Measured: 3.1e-5 <= 2.1e-4 and RMS 0.01002 <= 0.01076. Unobserved pixels are free (error 20x larger).
    """
    prior = GaussianMixture.random(SHAPE, 3, torch.Generator().manual_seed(0))
    model = GaussianMixtureDenoiser(prior, GaussianDiffusion.from_config().alphas_cumprod)
    op = build_operator("inpainting", mask_type="random", image_size=4, mask_prob_range=[0.5, 0.5]).double()
    x_true = prior.sample(1, torch.Generator().manual_seed(5)).clamp(-1, 1)
    y = op.forward(x_true).expand(200, -1, -1, -1)
    sampler = build_sampler("diffpir", lambda_=1.0, zeta=1.0, steps=20)
    seen = {}
    out = sampler.sample(model, op, y, sigma=0.0, shape=(200, *SHAPE), generator=torch.Generator().manual_seed(3),
                         callback=lambda i, x, x0: seen.setdefault(i, (x, x0)))
    observed = op.mask.bool().expand_as(out)
    rho = sampler.rho(1, 0.0)
    assert sampler.timesteps[-2] == 26 and rho == pytest.approx(1.0e-4, rel=0.05)
    assert (seen[1][1] - y)[observed].abs().max().item() <= 2 * rho / (1 + rho) + 1e-12
    assert torch.equal(out, seen[1][0].clamp(-1, 1))  # the last visited step returns x_t as is
    ac0 = sampler.diffusion.alphas_cumprod[0].item()
    rms = (out - y)[observed].pow(2).mean().sqrt().item()
    assert rms <= (1 - math.sqrt(ac0)) + 2 * rho + math.sqrt(1 - ac0) * 1.05
    assert (out - x_true)[~observed].pow(2).mean().sqrt().item() > 10 * rms


@pytest.mark.parametrize("case", ["inpainting", "downsampling", "random_matrix"])
def test_diffpir_approaches_exact_posterior(gmm_cases, case: str) -> None:  # noqa: F811
    """Bound: 4 x the SWD between two exact posterior sample sets (test_dps_dpps.py, where sampling
    the prior measures 0.25-0.28 and fails it). lambda = 4 makes rho_t = sigma_y^2 / sigma_bar_t^2 on
    the [-1, 1] scale (the Gaussian weighting of x0 ~ N(x0_hat, sigma_bar_t^2)); zeta = 1. Measured
    SWD 0.047 / 0.058 / 0.054 against bounds 0.060 / 0.078 / 0.071 (zeta 0.3 fails two cases)."""
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    sampler = build_sampler("diffpir", lambda_=4.0, zeta=1.0, steps=100, clip_denoised=False)
    assert _swd(sampler, model, op, y, ref) < bound


def test_sr_start_is_the_codes() -> None:
    """SR (y smaller by an integer factor): x = sqrt(abar_s) U(y) + sqrt(1 - abar_s) n with U the
    OpenCV bicubic upsampling and no t_y term (main_ddpir_sisr.py); other geometries keep the
    t_y formula (y itself, or A^+ y)."""
    sampler = build_sampler("diffpir", steps=20, t_start=500)
    y = torch.rand(2, 3, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sampler.initial_state((2, 3, 16, 24), None, y, 0.1, torch.Generator().manual_seed(2), torch.device("cpu"),
                              torch.float64)
    n = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ac = GaussianDiffusion.from_config().alphas_cumprod[500].item()
    expected = math.sqrt(ac) * bicubic_upsample(y, 4) + math.sqrt(1 - ac) * n
    assert (x - expected).abs().max().item() < 1e-12
    assert sr_factor(y, (2, 3, 16, 24)) == 4
    assert sr_factor(y, (2, 3, 4, 6)) is None and sr_factor(y, (2, 3, 16, 12)) is None  # same size; unequal factors
    assert sr_factor(torch.zeros(2, 5), (2, 3, 16, 24)) is None


def test_opencv_bicubic_weights() -> None:
    """OpenCV INTER_CUBIC (a = -0.75, clamped border) by 4: output pixel i samples the input at
    u = (i + 0.5) / 4 - 0.5. Pixel 6: u = 1.125, taps 0..3 with the Keys weights at distances
    1.125, 0.125, 0.875, 1.875; pixel 0: u = -0.375, taps -2..1 clamped to 0, 0, 0, 1. Rows sum to 1,
    so constants stay constant (the official start maps 2 U(y01) - 1 = U(y) on that account)."""
    def keys(d: float) -> float:
        a, d = -0.75, abs(d)
        return ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    w = opencv_cubic_matrix(6, 24)
    assert w[6, :4] == pytest.approx([keys(1.125), keys(0.125), keys(0.875), keys(1.875)], abs=1e-15)
    assert w[0, 0] == pytest.approx(keys(1.625) + keys(0.625) + keys(0.375)) and w[0, 1] == pytest.approx(keys(1.375))
    assert abs(w.sum(axis=1) - 1).max() < 1e-15
    const = torch.full((1, 3, 5, 7), 0.3, dtype=torch.float64)
    assert (bicubic_upsample(const, 4) - 0.3).abs().max().item() < 1e-15


def test_data_step_is_solved_in_float64() -> None:
    """Noiseless deblurring at t = 999 (rho = 1e-6 lambda abar / (1 - abar) = 4e-11 for lambda 1):
    float32 inputs give the float64 solution of those inputs (on the code's [0, 1] scale) rounded to
    float32 (values up to 1.003: bound 1e-7, measured 5.6e-8), where the float32 closed form is off by
    184 (bound 1e-2); the result stays float32."""
    op = build_operator("gaussian_blur", kernel_size=9, intensity=2.0, boundary="circular")
    g = torch.Generator().manual_seed(0)
    x_true, x0 = (2 * torch.rand(2, 3, 32, 32, generator=g) - 1).split(1)
    y = op.forward(x_true)
    sampler = build_sampler("diffpir", lambda_=1.0, steps=20)
    rho = sampler.rho(sampler.diffusion.num_timesteps - 1, 0.0)
    exact = 2 * op.prox((x0.double() + 1) / 2, (y.double() + 1) / 2, rho) - 1
    got = sampler.data_step(op, x0, y, rho)
    assert got.dtype == torch.float32 and rho < 1e-10
    assert (got - exact).abs().max().item() < 1e-7
    assert (op.prox(x0, y, rho) - exact).abs().max().item() > 1e-2
