"""RED-diff: its Adam step against torch.optim.Adam, the visited timesteps, the gradient's closed form,
the output and resume semantics, refusals, and the Gaussian-mixture posterior. The official code's
output is replayed in tests/test_equivalence.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from guided_diffusion.analytic import GaussianMixture, GaussianMixtureDenoiser, sliced_wasserstein
from guided_diffusion.diffusion import GaussianDiffusion
from operators import build_operator
from samplers import build_sampler
from samplers.reddiff import adam_step, reddiff_timesteps

from conftest import GMM_CASES, SHAPE, SIGMA, run_config_on_tiny_adm

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def test_adam_step_is_torch_adam() -> None:
    """Six steps with changing gradients: bit-identical to torch.optim.Adam (CPU, float32), moments too."""
    g = torch.Generator().manual_seed(0)
    mu0 = torch.randn(2, 3, 5, 5, generator=g)
    grads = [torch.randn(2, 3, 5, 5, generator=g) * 10 ** (-k) for k in range(6)]
    param = mu0.clone().requires_grad_(True)
    reference = torch.optim.Adam([param], lr=0.25, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    mu, m, v = mu0.clone(), torch.zeros_like(mu0), torch.zeros_like(mu0)
    for step, grad in enumerate(grads, start=1):
        param.grad = grad.clone()
        reference.step()
        mu, m, v = adam_step(mu, grad, m, v, step, 0.25, (0.9, 0.99))
        state = reference.state[param]
        assert torch.equal(mu, param.detach()) and torch.equal(m, state["exp_avg"]) and torch.equal(v, state["exp_avg_sq"])


def test_visited_timesteps() -> None:
    """range(0, T, T // steps) visited high to low: 20 steps -> 950..0 (999 never); 30 -> stride 33, 31 steps."""
    assert reddiff_timesteps(20) == list(range(0, 1000, 50))
    assert reddiff_timesteps(30)[-1] == 990 and len(reddiff_timesteps(30)) == 31
    sampler = build_sampler("reddiff", steps=20)
    assert sampler.diffusion.num_timesteps == 20 and sampler.diffusion.timestep_map.tolist() == reddiff_timesteps(20)
    train = GaussianDiffusion.from_config().alphas_cumprod
    ac = train[950].item()
    assert sampler.weight(19) == pytest.approx(0.25 * math.sqrt(1 - ac) / math.sqrt(ac), rel=1e-14)
    assert build_sampler("reddiff", weight_type="trunc_linear", lambda_=2.0).weight(0) == pytest.approx(
        2.0 * min(1.0, math.sqrt((1 - train[0].item()) / train[0].item())))


def test_gradient_is_the_closed_form() -> None:
    """d loss / d mu = (w_t / D) (eps - z) - (obs_weight / M) A^T (y - A x0_pred), D = C H W, M = numel(y_i)
    (per image; float64, SR x4 on 16x16)."""
    g = torch.Generator().manual_seed(1)
    op = build_operator("super_resolution", scale_factor=4, mode="bicubic")
    x, d = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64), torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    sampler = build_sampler("reddiff", obs_weight=0.7)
    grad = sampler.gradient(op, y, x, d, 0.3)
    expected = 0.3 / (3 * 16 * 16) * d - 0.7 / (3 * 4 * 4) * op.transpose(y - op.forward(x))
    assert (grad - expected).abs().max().item() < 1e-15


def _problem():
    prior = GaussianMixture.random(SHAPE, 3, torch.Generator().manual_seed(0))
    model = GaussianMixtureDenoiser(prior, GaussianDiffusion.from_config().alphas_cumprod)
    op = build_operator("inpainting", mask_type="random", image_size=4, mask_prob_range=[0.5, 0.5]).double()
    y = op.forward(prior.sample(3, torch.Generator().manual_seed(5)))
    return model, op, y


def test_output_is_the_last_x0_pred_and_resume_is_exact() -> None:
    """The output is x0_pred of the last iteration (mu before the last Adam step plus sigma_x0 z0),
    not the final mu; a run resumed from a callback's state (mu, m, v) and the generator's state at
    that moment equals the uninterrupted run bit for bit."""
    model, op, y = _problem()
    sampler = build_sampler("reddiff", steps=10, lr=0.2, sigma_x0=1e-3)
    seen = {}

    def record(i, state, x0_pred):
        seen[i] = (state.clone(), x0_pred.clone(), gen.get_state())

    gen = torch.Generator().manual_seed(7)
    out = sampler.sample(model, op, y, shape=(3, *SHAPE), generator=gen, callback=record)
    assert sorted(seen) == list(range(10)) and seen[0][0].shape == (3, 9, 4, 4)
    assert torch.equal(out, seen[0][1])
    mu_final = seen[0][0][:, :3]
    assert (out - mu_final).abs().max().item() > 1e-3    # the last Adam step moves mu, not the output
    mu_before = seen[1][0][:, :3]
    assert 0 < (out - mu_before).abs().max().item() < 6e-3  # = sigma_x0 z0
    resumed_gen = torch.Generator().manual_seed(0)
    resumed_gen.set_state(seen[6][2])
    resumed = sampler.sample(model, op, y, shape=(3, *SHAPE), generator=resumed_gen, start=(5, seen[6][0]))
    assert torch.equal(resumed, out)


def test_refusals() -> None:
    """One-line refusals: a nonlinear operator (no A^+ y start), a missing operator, bad betas."""
    sampler = build_sampler("reddiff")
    with pytest.raises(ValueError, match="linear operator; got 'phase_retrieval'"):
        sampler.check_task(build_operator("phase_retrieval"))
    with pytest.raises(ValueError, match="got no operator"):
        sampler.check_task(None)
    with pytest.raises(ValueError, match=r"'sampler.adam_betas' must be a list of 2 values"):
        build_sampler("reddiff", adam_betas=[0.9])
    with pytest.raises(ValueError, match=r"'sampler.adam_betas' item 1 must be in \[0, 1\]"):
        build_sampler("reddiff", adam_betas=[0.9, 1.5])
    with pytest.raises(ValueError, match=r"adam_betas must be two numbers in \[0, 1\)"):
        build_sampler("reddiff", adam_betas=[0.9, 1.0])
    with pytest.raises(ValueError, match="'sampler.weight_type' must be one of linear"):
        build_sampler("reddiff", weight_type="cubic")


@pytest.mark.parametrize("case", GMM_CASES)
def test_gaussian_mixture_posterior(gmm_cases, case: str) -> None:
    """1000 steps, the code's lr 0.1 and lambda 0.25. RED-diff fits a point (a Dirac variational
    distribution) per draw of its noise, so its spread is below the posterior's: measured SWD
    0.033 / 0.057 / 0.060 against the 4 x floor bounds 0.060 / 0.078 / 0.071 (prior: 0.25-0.28),
    mean spread 0.080 / 0.127 / 0.102 against the posterior's 0.117 / 0.175 / 0.159."""
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    sampler = build_sampler("reddiff", steps=1000, lr=0.1)
    x = sampler.sample(model, op, y, sigma=SIGMA, shape=(len(ref), *SHAPE), generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64)
    assert sliced_wasserstein(x, ref) < bound
    assert x.std(0).mean() < 0.8 * ref.std(0).mean()


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "reddiff").glob("*.yaml")), ids=lambda p: p.stem)
def test_config_runs_on_the_tiny_adm(path) -> None:
    """Each shipped config, shrunk to 32x32 and 2 steps, runs through `sample` on the tiny random ADM."""
    run_config_on_tiny_adm(path, steps=2)
