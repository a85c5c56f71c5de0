"""DPS and DPPS on the exact Gaussian-mixture posterior, batching, DPPS's candidate machinery, and the
noise model's loss weighting."""
from __future__ import annotations

import math

import pytest
import torch

from guided_diffusion import TINY_FLAGS, create_model
from operators import MatrixOperator
from samplers import build_sampler
from samplers.dps import with_noise_model

from conftest import GMM_CASES, SHAPE, SIGMA, gmm_swd as _swd

@pytest.mark.parametrize("case", GMM_CASES)
@pytest.mark.parametrize("name,params", [("dps", {"scale": 0.3}), ("dpps", {"scale": 0.3, "n_max": 20})])
def test_sampler_approaches_exact_posterior(gmm_cases, case: str, name: str, params: dict) -> None:
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    sampler = build_sampler(name, steps=200, clip_denoised=False, **params)
    assert _swd(sampler, model, op, y, ref) < bound


@pytest.mark.parametrize("case", GMM_CASES)
def test_ignoring_y_fails_the_bound(gmm_cases, case: str) -> None:
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    assert _swd(build_sampler("ddpm", steps=200, clip_denoised=False), model, op, y, ref) > bound


def test_dps_without_data_step_is_ddpm(gmm_cases) -> None:
    """scale = 0 removes the data step and must leave exactly ancestral DDPM (same noise stream)."""
    model, cases = gmm_cases
    op, y, _, _ = cases["inpainting"]
    runs = [build_sampler(n, steps=20, clip_denoised=False, **kw).sample(
        model, op, y[:8], sigma=SIGMA, shape=(8, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for n, kw in (("dps", {"scale": 0.0}), ("ddpm", {}))]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["dps", "dpps"])
def test_batched_equals_image_by_image(name: str) -> None:
    """With one generator per image, each image of a batch gets exactly its batch-of-one result:
    the loss is a sum of per-image norms (not one norm over the batch), selection is per image."""
    torch.manual_seed(0)
    model = create_model(**TINY_FLAGS).double().eval().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    g = torch.Generator().manual_seed(3)
    op = MatrixOperator(torch.randn(40, 3 * 32 * 32, generator=g, dtype=torch.float64) / 50, (3, 32, 32))
    y = torch.randn(3, 40, generator=g, dtype=torch.float64)
    sampler = build_sampler(name, scale=0.5, steps=4)
    gens = lambda idx: [torch.Generator().manual_seed(100 + k) for k in idx]  # noqa: E731
    batched = sampler.sample(model, op, y, sigma=0.05, shape=(3, 3, 32, 32), generator=gens(range(3)))
    for k in range(3):
        single = sampler.sample(model, op, y[k:k + 1], sigma=0.05, shape=(1, 3, 32, 32), generator=gens([k]))
        assert (batched[k] - single[0]).abs().max().item() < 1e-10


def test_dpps_candidate_count_matches_formula() -> None:
    """n_t = floor(max(n_max (1 - exp(-SNR_t)), 2)) on the 1000-step linear schedule: the values
    computed in the reference notes, and their total."""
    s = build_sampler("dpps")
    expected = {999: 2, 528: 2, 500: 4, 450: 6, 400: 10, 350: 16, 300: 23, 250: 33, 200: 42, 46: 50, 0: 50}
    assert {t: s.n_candidates(t) for t in expected} == expected
    assert min(t for t in range(1000) if s.n_candidates(t) == 2) == 528
    assert sum(s.n_candidates(t) for t in range(1000)) == 16255
    ac = s.diffusion.alphas_cumprod[300].item()
    assert build_sampler("dpps", n_max=10).n_candidates(300) == math.floor(max(10 * (1 - math.exp(-ac / (1 - ac))), 2))


def test_dpps_selects_the_closest_candidate_per_image() -> None:
    s = build_sampler("dpps", steps=10)
    op = MatrixOperator(torch.eye(4, dtype=torch.float64), (1, 2, 2))
    target = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 2.0]], dtype=torch.float64)
    cands = torch.zeros(2, 3, 1, 2, 2, dtype=torch.float64)
    cands[0, 1, 0, 0, 0] = 0.9  # image 0: candidate 1 is closest to its target
    cands[1, 2, 0, 1, 1] = 2.1  # image 1: candidate 2
    cands[1, 0, 0, 0, 0] = 5.0
    chosen = s.select(cands, op, target, torch.zeros(1, 1, 2, 2, dtype=torch.float64))
    assert torch.equal(chosen[0], cands[0, 1]) and torch.equal(chosen[1], cands[1, 2])


def test_dpps_aligned_start() -> None:
    s = build_sampler("dpps", steps=10)
    ac = s.diffusion.alphas_cumprod[-1].item()
    y = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    noise = torch.randn(2, 3, 8, 8, generator=g())
    x_T = s.initial_state((2, 3, 8, 8), None, y, 0.0, g(), torch.device("cpu"), torch.float32)
    up = y.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(x_T, math.sqrt(ac) * up + math.sqrt(1 - ac) * noise, atol=1e-6)
    flat = s.initial_state((2, 3, 8, 8), None, torch.randn(2, 5), 0.0, g(), torch.device("cpu"), torch.float32)
    assert torch.equal(flat, noise)  # not image-like (e.g. phase retrieval): plain noise


def test_divergence_names_sampler_step_and_images() -> None:
    """A NaN in one image stops sampling with a message naming the sampler, the step and the image."""
    from samplers import NonFiniteError

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = torch.zeros_like(x)
        if int(t[0]) < 500:
            eps[1] = float("nan")  # image 1 breaks in the second half
        return eps

    sampler = build_sampler("ddpm", steps=10, clip_denoised=False)
    with pytest.raises(NonFiniteError) as err:
        sampler.sample(model, shape=(3, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert err.value.images == [1]
    assert "ddpm" in str(err.value) and "step index 4 (t = 444)" in str(err.value) and "x0_hat" in str(err.value)


def test_noise_model_follows_the_task_noise() -> None:
    """with_noise_model fills noise_model from the task's noise block for dps and dpps (poisson for
    a poisson block, gaussian otherwise), keeps one the block sets, and leaves other samplers alone."""
    poisson = {"name": "poisson", "rate": 1.0}
    assert with_noise_model({"name": "dps", "scale": 0.3}, poisson) == {"name": "dps", "scale": 0.3, "noise_model": "poisson"}
    assert with_noise_model({"name": "dpps"}, {"name": "gaussian", "sigma": 0.05})["noise_model"] == "gaussian"
    assert with_noise_model({"name": "dpps"}, None)["noise_model"] == "gaussian"
    assert with_noise_model({"name": "dps", "noise_model": "gaussian"}, poisson)["noise_model"] == "gaussian"
    assert with_noise_model({"name": "diffpir", "lambda_": 7.0}, poisson) == {"name": "diffpir", "lambda_": 7.0}
    assert build_sampler(**with_noise_model({"name": "dpps"}, poisson)).noise_model == "poisson"


@pytest.mark.parametrize("noise_model", ["gaussian", "poisson"])
def test_dpps_gradient_step_uses_the_noise_model(noise_model: str) -> None:
    """DPPS's last step returns mu' = mu - scale grad L with L the noise model's loss: the norm
    (gaussian) or mean_j ||r|| / |y_j| (poisson, the DPS code's weighting)."""
    g = torch.Generator().manual_seed(0)
    op = MatrixOperator(torch.randn(5, 12, generator=g, dtype=torch.float64), (3, 2, 2))
    x_t = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randn(1, 5, generator=g, dtype=torch.float64)
    model = lambda x, t: torch.tanh(x)  # noqa: E731
    sampler = build_sampler("dpps", scale=0.7, steps=10, noise_model=noise_model)
    t = torch.zeros(1, dtype=torch.long)
    got, _ = sampler.step(model, x_t, t, op, y, 0.05, torch.Generator().manual_seed(1))
    x = x_t.clone().requires_grad_(True)
    out = sampler.diffusion.p_mean_variance(model, x, t, True)
    norm = (y - op.forward(out["x0_hat"])).norm()
    loss = norm if noise_model == "gaussian" else (norm / y.abs()).mean()
    (grad,) = torch.autograd.grad(loss, x)
    assert (got - (out["mean"] - 0.7 * grad)).abs().max().item() < 1e-12
