"""DPIR: the official schedule and start, the float64 chain against the official float64 run, the
diffusion UNet as an exact Gaussian denoiser (GMM), the x8 ensemble, callbacks/resume and refusals.
The float32 golden replay is in tests/test_equivalence.py."""
from __future__ import annotations

import math

from pathlib import Path

import pytest
import torch

from conftest import SHAPE, SIGMA, checkpoint_file
from guided_diffusion import TINY_FLAGS, create_model, load_model
from guided_diffusion.analytic import linear_problems
from guided_diffusion.runtime import ModelRunner
from operators import build_operator
from samplers import build_sampler
from samplers.diffpir import sr_factor
from samplers.dpir import augment, augment_inverse, dpir_schedule
from test_equivalence import load_case, operator, rel

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
FILES = ("dpir_deblur_gauss", "dpir_sr4")


@pytest.fixture(scope="module")
def drunet64():
    return load_model(checkpoint_file("golden_drunet_small.pt"), dtype=torch.float64)


@pytest.mark.parametrize("name", FILES)
def test_schedule_and_start_are_the_codes(name: str) -> None:
    """sigmas / rhos as stored (the code's float32 values: measured 1.1e-7 / 2.3e-7 relative);
    model_sigma2 None gives the code's rule (deblur 255 sigma_y = 12.75, SR max(sf, 255 sigma_y)
    = 4); the start is y01 (deblur) or OpenCV bicubic of y01 (SR), measured 2.6e-8 / 1.2e-7."""
    case = load_case(name)
    factor = sr_factor(case["y"], case["image"].shape)
    sampler = build_sampler(**case["sampler"])
    sigmas, rhos = sampler.schedule(case["sigma"], factor)
    assert rel(torch.tensor(sigmas), case["sigmas"]) < 1e-6
    assert (torch.tensor(rhos) / case["rhos"].double() - 1).abs().max().item() < 1e-6
    derived = build_sampler(**{**case["sampler"], "model_sigma2": None}).schedule(case["sigma"], factor)
    assert derived == (sigmas, rhos)
    x = sampler.initial_state(case["image"].shape, operator(case), case["y"], case["sigma"], None,
                              torch.device("cpu"), torch.float32)
    assert ((x + 1) / 2 - case["x_init"]).abs().max().item() < 2e-7


def test_schedule_closed_forms() -> None:
    """Ends 49/255 and sigma_2/255, geometric in between (w = 1), arithmetic for w = 0; the last
    rho is lambda_ when sigma_n = sigma_2 / 255 (the deblur rule)."""
    sigmas, rhos = dpir_schedule(8, 49.0, 12.75, 1.0, 0.23, 12.75 / 255)
    assert math.isclose(sigmas[0], 49 / 255) and math.isclose(sigmas[-1], 12.75 / 255)
    ratios = [b / a for a, b in zip(sigmas, sigmas[1:])]
    assert max(ratios) - min(ratios) < 1e-12 and math.isclose(ratios[0], (12.75 / 49) ** (1 / 7))
    assert math.isclose(rhos[-1], 0.23) and all(math.isclose(r * s ** 2, 0.23 * (12.75 / 255) ** 2)
                                                for r, s in zip(rhos, sigmas))
    linear, _ = dpir_schedule(5, 49.0, 9.0, 0.0, 0.23, 0.01)
    assert all(math.isclose(s * 255, v) for s, v in zip(linear, (49, 39, 29, 19, 9)))


@pytest.mark.parametrize("name", FILES)
def test_float64_chain_matches_the_official_float64_run(name: str, drunet64) -> None:
    """Network and data step in float64 against `output_float64`: measured 5.8e-9 (deblur) and
    1.3e-9 (SR); what remains is the official run's float32 schedule values (1e-7 relative)."""
    case = load_case(name)
    y = 2 * case["y_official"].double() - 1
    out = build_sampler(**case["sampler"]).sample(drunet64, operator(case), y, sigma=case["sigma"],
                                                  shape=case["image"].shape)
    assert out.dtype == torch.float64 and rel((out + 1) / 2, case["output_float64"]) < 1e-7


def test_callback_resume_and_model_runner(drunet64) -> None:
    """callback(i, x, x) after every iteration (i = N-1 .. 0); resuming from a state a callback saw
    gives the uninterrupted output bit for bit; the DRUNet behind a ModelRunner is recognised."""
    case = load_case("dpir_deblur_gauss")
    op, sampler, y = operator(case), build_sampler(**case["sampler"]), case["y"].double()
    seen = {}
    full = sampler.sample(drunet64, op, y, sigma=case["sigma"], shape=case["image"].shape,
                          callback=lambda i, x, x0: seen.__setitem__(i, x.clone()))
    assert sorted(seen) == list(range(8)) and torch.equal(seen[0], full)
    resumed = sampler.sample(drunet64, op, y, sigma=case["sigma"], shape=case["image"].shape, start=(4, seen[5]))
    assert torch.equal(resumed, full)
    runner = sampler.sample(ModelRunner(drunet64), op, y, sigma=case["sigma"], shape=case["image"].shape)
    assert torch.equal(runner, full)


def test_diffusion_unet_is_an_exact_gaussian_denoiser() -> None:
    """With the GMM's exact eps model, the diffusion denoiser at s = sigma_bar_t / 2 (a noise level
    on the training grid) is the exact posterior mean E[x | x + 2 s n] of the mixture: float64
    rounding, bound 1e-10."""
    model, _ = linear_problems(SIGMA, SHAPE)
    sampler = build_sampler("dpir", clip_denoised=False)
    d = sampler.train_diffusion
    g = torch.Generator().manual_seed(0)
    clean = model.prior.sample(4, g)
    for t in (30, 200, 600):
        std = d.sqrt_recipm1_alphas_cumprod[t].item()
        noisy = clean + std * torch.randn(clean.shape, generator=g, dtype=torch.float64)
        ours = 2 * sampler._diffusion_denoise(model, (noisy + 1) / 2, std / 2) - 1
        eye = torch.eye(clean[0].numel(), dtype=torch.float64)
        for k in range(len(noisy)):
            post = model.prior.posterior(eye, noisy[k].flatten(), std)
            mean = (post.weights[:, None] * post.means).sum(0).reshape(SHAPE)
            assert (ours[k] - mean).abs().max().item() < 1e-10


@pytest.mark.parametrize("case,measured", [("inpainting", 0.074), ("downsampling", 0.061), ("random_matrix", 0.052)])
def test_dpir_with_the_diffusion_denoiser_on_the_gmm(case: str, measured: float) -> None:
    """24 iterations with the exact GMM denoiser end near the exact posterior mean: distance
    measured 0.074 / 0.061 / 0.052 (inpainting, pooling, matrix), bound 0.1, where the start A^+ y
    is 1.54 / 1.72 / 1.72 away. (The matrix case needs the [-1, 1] data step: solved on [0, 1]
    against (y + 1) / 2, which is not A x01 when A 1 != 1, it ended 8.3 away.)"""
    model, problems = linear_problems(SIGMA, SHAPE)
    op, y, post = problems[case]
    mean = (post.weights[:, None] * post.means).sum(0).reshape(1, *SHAPE)
    x = build_sampler("dpir", steps=24, clip_denoised=False, denoiser="diffusion").sample(
        model, op, y, sigma=SIGMA, shape=(1, *SHAPE))
    assert (x - mean).norm().item() < 0.1 and (op.pinv(y) - mean).norm().item() > 1.5
    assert abs((x - mean).norm().item() - measured) < 2e-3


def test_x8_modes_form_the_dihedral_group() -> None:
    """Eight distinct transforms of a non-symmetric image, each undone by augment_inverse."""
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 3, 4, 4)
    images = [augment(x, m) for m in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in images}) == 8
    assert all(torch.equal(augment_inverse(v, m), x) for m, v in enumerate(images))


def test_x8_on_an_equivariant_denoiser_changes_nothing(drunet64) -> None:
    """A denoiser that commutes with rotations and flips (an eps network acting pixelwise) gives
    the same chain with x8 on or off, bit for bit; the golden DRUNet (not equivariant) does not."""
    case = load_case("dpir_deblur_gauss")
    op, y, shape = operator(case), case["y"].double(), case["image"].shape

    def pixelwise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.3 * torch.tanh(x_t)

    runs = {}
    for model, kind in ((pixelwise, "pixelwise"), (drunet64, "drunet")):
        for x8 in (False, True):
            sampler = build_sampler(**{**case["sampler"], "x8": x8})
            runs[kind, x8] = sampler.sample(model, op, y, sigma=case["sigma"], shape=shape)
    assert torch.equal(runs["pixelwise", False], runs["pixelwise", True])
    assert rel(runs["drunet", True], runs["drunet", False]) > 1e-3


def test_patch_size_runs_the_unet_on_windows() -> None:
    """With patch_size the diffusion denoiser runs on overlapping windows (PatchedModel): for an eps
    network acting pixelwise the result equals the whole-image run (bound 1e-12, float64)."""
    case = load_case("dpir_deblur_gauss")
    op, y, shape = operator(case), case["y"].double(), case["image"].shape

    def pixelwise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.3 * torch.tanh(x_t)

    whole = build_sampler("dpir", steps=4, denoiser="diffusion").sample(pixelwise, op, y, sigma=0.1, shape=shape)
    patched = build_sampler("dpir", steps=4, patch_size=16, patch_stride=8).sample(pixelwise, op, y, sigma=0.1,
                                                                                  shape=shape)
    assert (whole - patched).abs().max().item() < 1e-12


def test_refusals(drunet64) -> None:
    """Nonlinear operator or none: one line; a denoiser choice that does not fit the model."""
    sampler = build_sampler("dpir")
    for op in (build_operator("phase_retrieval"), None):
        with pytest.raises(ValueError, match="closed-form prox of a linear operator") as err:
            sampler.check_task(op)
        assert "\n" not in str(err.value)
    case = load_case("dpir_deblur_gauss")
    unet = create_model(**TINY_FLAGS)
    with pytest.raises(ValueError, match="denoiser 'drunet' but the model is not a DRUNet"):
        build_sampler("dpir", denoiser="drunet").sample(unet, operator(case), case["y"], sigma=0.1,
                                                        shape=case["image"].shape)
    with pytest.raises(ValueError, match="denoiser 'diffusion' but the model is a DRUNet"):
        build_sampler("dpir", denoiser="diffusion").sample(drunet64, operator(case), case["y"].double(), sigma=0.1,
                                                           shape=case["image"].shape)


@pytest.mark.parametrize("config,extra", [
    ("ffhq_gaussian_deblur_noisy.yaml", ["task.operator.kernel_size=9"]),
    ("ffhq_sr4_noiseless.yaml", []),
    ("ffhq_motion_deblur_noisy_drunet.yaml", ["task.operator.kernel_size=9", "model.flags.image_size=32"]),
])
def test_configs_run_on_stand_in_weights(config: str, extra: list, tmp_path, tiny_checkpoint) -> None:
    """A table config (diffusion UNet: the tiny random ADM) and a DRUNet config (a small random
    DRUNet saved as a plain state dict, recognised by layout) run end to end at 32x32, 2 iterations."""
    import numpy as np
    from PIL import Image

    from configs import load_config
    from guided_diffusion import DRUNet
    from runs.restore import run

    images = tmp_path / "images"
    images.mkdir()
    for k, pixels in enumerate(np.random.default_rng(0).random((2, 32, 32, 3))):
        Image.fromarray((pixels * 255).astype("uint8")).save(images / f"img{k}.png")
    checkpoint = tiny_checkpoint
    if "drunet" in config:
        checkpoint = tmp_path / "drunet_color.pth"
        torch.save(DRUNet(nc=(8, 16, 16, 32), nb=1).state_dict(), checkpoint)
    overrides = [f"model.checkpoint={checkpoint}", "sampler.steps=2", f"data.input={images}",
                 f"output={tmp_path / 'out'}", *extra]
    cfg = load_config(str(REPO / "configs" / "dpir" / config), overrides)
    report = run(cfg)
    assert len(report.written) == 2 and not report.failed
