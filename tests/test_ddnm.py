"""DDNM / DDNM+: the range-null-space correction, the DDNM+ noise terms and the time-travel schedule
against the official run's values, resuming across time travel, refusals, and the exact
Gaussian-mixture posterior (where the official simplified noise level measurably misses it)."""
from __future__ import annotations


import pytest
import torch
from conftest import GMM_CASES, GOLDEN_SAMPLERS_DIR, SHAPE, SIGMA, gmm_swd

from operators import build_operator
from samplers import build_sampler
from samplers.ddnm import travel_schedule, visits

pytestmark = pytest.mark.usefixtures("one_thread")


def golden(name: str) -> dict:
    return torch.load(GOLDEN_SAMPLERS_DIR / f"{name}.pt", weights_only=True)


def test_schedule_matches_the_official_jump_schedule() -> None:
    """get_schedule_jump(20, 3, 2) of the golden DDNM+ run, and its visit counts (38 network calls,
    18 travel visits in 6 runs of 3, each run one jump); no travel: steps - 1, ..., 0, -1."""
    case = golden("ddnm_plus_inpaint_noisy")
    times = travel_schedule(20, 3, 2)
    assert times == list(case["schedule_times"])
    sampler = build_sampler(**case["sampler"])
    assert sampler.nfe == 38 == sum(kind == "denoise" for kind in case["visit_kind"])
    jumps = [(i, j) for i, j in sampler.visits if j > i]
    assert len(jumps) == 6 and all(j - i == 3 for i, j in jumps)
    assert travel_schedule(5, 1, 1) == [4, 3, 2, 1, 0, -1]
    assert visits([2, 1, 2, 3, 2, 1, 0, -1]) == [(2, 1), (1, 3), (3, 2), (2, 1), (1, 0), (0, -1)]


def test_first_visit_and_grid_are_the_codes() -> None:
    """t_i = i * (1000 // steps): the first visit is (steps - 1) * skip, not 999 (980 for 50 steps,
    957 for 30, where a 'ddim30' respacing would give 986)."""
    for steps, first in ((50, 980), (20, 950), (30, 957), (100, 990)):
        sampler = build_sampler("ddnm", steps=steps)
        assert int(sampler.diffusion.timestep_map[-1]) == first and sampler.diffusion.num_timesteps == steps


def test_noise_terms_match_the_official_run() -> None:
    """lambda_t and gamma_t of every denoising visit of the golden DDNM+ run (sigma_y 0.05), from its
    float32 abar_next: the simplified path's sqrt(1 - abar'^2) and threshold abar' sigma_y. Measured:
    gamma_t within 7.2e-8, lambda_t within 2.5e-5 relative (the code's float32 1 - abar'^2 at
    abar' = 0.9999, where lambda_t = 0.283 < 1)."""
    case = golden("ddnm_plus_inpaint_noisy")
    sampler = build_sampler(**case["sampler"])
    pairs = [(lam, gam, a) for lam, gam, a in zip(case["ddnm_lambda"], case["ddnm_gamma"], case["abar_next"])
             if lam is not None]
    assert len(pairs) == 38 and sum(lam < 1 for lam, _, _ in pairs) == 3
    for lam, gam, a in pairs:
        ours = sampler.noise_terms(float(a), case["sigma"])
        assert ours[0] == pytest.approx(float(lam), rel=1e-4) and ours[1] == pytest.approx(float(gam), abs=1e-6)


def test_corrected_noise_terms_keep_the_forward_variance() -> None:
    """variant corrected: lambda_t = 1 and gamma_t^2 + abar' sigma_y^2 = 1 - abar' when the noise fits,
    else lambda_t^2 abar' sigma_y^2 = 1 - abar' and gamma_t = 0."""
    sampler = build_sampler("ddnm", variant="corrected")
    lam, gam = sampler.noise_terms(0.5, 0.1)
    assert lam == 1.0 and gam ** 2 + 0.5 * 0.1 ** 2 == pytest.approx(0.5)
    lam, gam = sampler.noise_terms(0.999, 0.5)
    assert gam == 0.0 and lam ** 2 * 0.999 * 0.25 == pytest.approx(0.001)


@pytest.mark.parametrize("variant", ["simplified", "corrected"])
def test_noiseless_output_is_data_consistent(gmm_cases, variant: str) -> None:
    """sigma = 0: every visit's x0_ddnm satisfies A x0_ddnm = y (lambda_t = 1, A A^+ = I for a
    full-row-rank A), and the last visit returns x0_ddnm, so A(output) = y to float64 rounding
    (measured 4e-16) while the null-space part stays the network's."""
    model, cases = gmm_cases
    op, y, _, _ = cases["random_matrix"]
    sampler = build_sampler("ddnm", steps=20, variant=variant, travel_length=2, travel_repeat=2)
    seen = []
    out = sampler.sample(model, op, y[:16], sigma=0.0, shape=(16, *SHAPE), dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0), callback=lambda i, x, x0: seen.append(x0))
    assert (op.forward(out) - y[:16]).abs().max().item() < 1e-12
    assert all((op.forward(x0) - y[:16]).abs().max().item() < 1e-12 for x0 in seen)
    null = out - op.pinv(op.forward(out))
    assert null.abs().max().item() > 0.1


def test_resume_across_time_travel_is_bit_identical(gmm_cases) -> None:
    """A state seen by the callback, with the generator's state of that moment, resumes to the
    uninterrupted output bit for bit; callbacks skip states before a travel visit, and a start at a
    travel visit is refused in one line."""
    model, cases = gmm_cases
    op, y, _, _ = cases["inpainting"]
    sampler = build_sampler("ddnm", steps=12, travel_length=2, travel_repeat=2, variant="corrected")
    g = torch.Generator().manual_seed(3)
    states = {}

    def record(i: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        states[i] = (x.clone(), g.get_state())

    kw = dict(sigma=SIGMA, shape=(4, *SHAPE), dtype=torch.float64)
    full = sampler.sample(model, op, y[:4], generator=g, callback=record, **kw)
    n = len(sampler.visits)
    travel_next = [n - 1 - k for k in range(n - 1) if sampler.visits[k + 1][1] > sampler.visits[k + 1][0]]
    assert travel_next and not set(travel_next) & set(states)
    for i in (max(states) - 1, travel_next[0] - 1, 1):
        x, state = states[i]
        resumed = torch.Generator()
        resumed.set_state(state)
        assert torch.equal(sampler.sample(model, op, y[:4], generator=resumed, start=(i - 1, x), **kw), full)
    with pytest.raises(ValueError, match="time-travel visit"):
        sampler.sample(model, op, y[:4], generator=torch.Generator(), start=(travel_next[0] - 1, full), **kw)


def test_refusals() -> None:
    sampler = build_sampler("ddnm")
    with pytest.raises(ValueError, match="linear operator with a pseudo-inverse"):
        sampler.check_task(build_operator("phase_retrieval"))
    with pytest.raises(ValueError, match="linear operator with a pseudo-inverse"):
        sampler.check_task(None)
    sampler.check_task(build_operator("super_resolution", scale_factor=4, mode="avgpool"))
    with pytest.raises(ValueError, match="sampler.variant"):
        build_sampler("ddnm", variant="svd")
    with pytest.raises(ValueError, match="sampler.travel_length"):
        build_sampler("ddnm", travel_length=0)
    with pytest.raises(ValueError, match="timestep_respacing"):
        build_sampler("ddnm", timestep_respacing="ddim50")


@pytest.mark.parametrize("case", GMM_CASES)
def test_corrected_variant_approaches_exact_posterior(gmm_cases, case: str) -> None:
    """DDNM+ with the DDIM noise level (variant corrected, 100 steps, eta 0.85) on the mixture prior,
    sigma_y 0.05: measured SWD 0.051 / 0.066 / 0.058 against bounds 0.060 / 0.078 / 0.071."""
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    assert gmm_swd(build_sampler("ddnm", steps=100, variant="corrected"), model, op, y, ref) < bound


@pytest.mark.parametrize("case", GMM_CASES)
def test_simplified_noise_level_misses_the_posterior(gmm_cases, case: str) -> None:
    """The official simplified path's sqrt(1 - abar'^2) sqrt(1 - abar') noise (README trap 1) leaves
    too little noise near t = 0: measured SWD 0.123 / 0.154 / 0.140, about twice the bound, half way
    to ignoring y (0.25-0.28)."""
    model, cases = gmm_cases
    op, y, ref, bound = cases[case]
    swd = gmm_swd(build_sampler("ddnm", steps=100), model, op, y, ref)
    assert 1.5 * bound < swd < 0.2


def test_batched_equals_image_by_image(gmm_cases) -> None:
    """With one generator per image, each image of a batch gets its batch-of-one result (time travel
    and DDNM+ noise terms included)."""
    model, cases = gmm_cases
    op, y, _, _ = cases["downsampling"]
    sampler = build_sampler("ddnm", steps=10, travel_length=2, travel_repeat=2)
    gens = lambda idx: [torch.Generator().manual_seed(100 + k) for k in idx]  # noqa: E731
    kw = dict(sigma=SIGMA, dtype=torch.float64)
    batched = sampler.sample(model, op, y[:3], shape=(3, *SHAPE), generator=gens(range(3)), **kw)
    for k in range(3):
        single = sampler.sample(model, op, y[k:k + 1], shape=(1, *SHAPE), generator=gens([k]), **kw)
        assert (batched[k] - single[0]).abs().max().item() < 1e-12


def test_a_time_travel_run_stopped_early_resumes_to_the_same_images(tmp_path, tiny_checkpoint, monkeypatch) -> None:
    """With time travel the loop has more indices than grid steps (num_steps = visits): a run
    stopped at its second denoising visit keeps a state whose index lies above the step count, and
    the rerun continues from it to the uninterrupted run's images, byte for byte."""
    from test_run_folders import make_images, pngs, restore_config, write

    from configs import load_config
    from runs.restore import run
    from samplers.ddnm import DDNM

    images = make_images(tmp_path / "images", n=2, seed=3)
    spec = {"name": "ddnm", "steps": 6, "travel_length": 2, "travel_repeat": 2}

    def config(out: str):
        return load_config(write(tmp_path / f"{out}.yaml", restore_config(
            tiny_checkpoint, images, tmp_path / out, sampler=spec, state_every_steps=1)))

    assert build_sampler(**spec).num_steps == len(visits(travel_schedule(6, 2, 2))) > 6
    run(config("reference"))
    calls, denoise = [], DDNM.denoise

    def stop_at_second_visit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return denoise(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(DDNM, "denoise", stop_at_second_visit)
        with pytest.raises(KeyboardInterrupt):
            run(config("stopped"))
    (state,) = (tmp_path / "stopped" / ".dfrestore" / "state").glob("images-*.pt")
    assert torch.load(state, weights_only=True)["next_index"] >= 6
    calls.clear()
    with monkeypatch.context() as patch:
        patch.setattr(DDNM, "denoise", lambda self, *a, **k: calls.append(1) or denoise(self, *a, **k))
        report = run(config("stopped"))
    assert len(calls) == build_sampler(**spec).nfe - 1  # continued after the first visit, not restarted
    assert len(report.written) == 2 and pngs(tmp_path / "stopped") == pngs(tmp_path / "reference")
