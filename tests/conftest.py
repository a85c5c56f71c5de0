"""Shared fixtures: where the golden checkpoints live, seeded generators, single-threaded sampling."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Copies of the golden checkpoints and of the official samplers' golden trajectories live in the
# repository (tests/data/README.md), so a clone tests on its own. GOLDEN_DIR points the checkpoint
# tests at another folder of the same layout (e.g. the project's shared/checkpoints).
CHECKPOINT_DIR = Path(os.environ.get("GOLDEN_DIR", REPO / "tests" / "data" / "checkpoints"))
GOLDEN_SAMPLERS_DIR = REPO / "tests" / "data" / "golden_samplers"


def checkpoint_file(name: str) -> Path:
    path = CHECKPOINT_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the tests read the golden checkpoints from tests/data/checkpoints "
                                f"(or the folder GOLDEN_DIR names)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A project-format checkpoint ({"flags", "state_dict"}) of the tiny ADM with random weights
    (N(0, 0.02^2), so no layer is the identity), for end-to-end runs in seconds."""
    from guided_diffusion import TINY_FLAGS, create_model

    torch.manual_seed(0)
    model = create_model(**TINY_FLAGS)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"flags": TINY_FLAGS, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run a module's samplers single-threaded: hundreds of steps on tiny tensors (the 48-dim
    Gaussian mixture), where intra-op threads only add contention (a 1000-step GDP posterior run:
    4 s vs 30 s on a loaded 2-core machine). The thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- The analytic Gaussian-mixture posterior problems every restoration sampler is tested on ----
SHAPE, SIGMA, N_SAMPLES = (3, 4, 4), 0.05, 400
GMM_CASES = ("inpainting", "downsampling", "random_matrix")


@pytest.fixture(scope="session")
def gmm_cases():
    """(exact denoiser, {case: (op, y repeated N times, N exact posterior samples, bound)}).

    Cases: half the pixels observed, 2x average pooling, a 16x48 Gaussian matrix; sigma_y = 0.05.
    Bound = 4 x the SWD between two independent exact posterior sample sets of size N (the
    finite-sample floor, measured 0.013-0.017). Sampling the prior, i.e. ignoring y, measured
    0.25-0.28 and fails it; DPS (scale 0.3, 200 steps) measured 0.023-0.042.
    """
    return make_gmm_cases(SIGMA)


def make_gmm_cases(sigma: float):
    """The GMM problems with measurement noise `sigma`: (exact denoiser, {case: (op, y repeated N
    times, N exact posterior samples, bound = 4 x the finite-sample SWD floor)})."""
    from guided_diffusion.analytic import linear_problems, sliced_wasserstein

    model, problems = linear_problems(sigma, SHAPE)
    cases = {}
    for name, (op, y, post) in problems.items():
        ref = post.sample(N_SAMPLES, torch.Generator().manual_seed(1))
        bound = 4 * sliced_wasserstein(ref, post.sample(N_SAMPLES, torch.Generator().manual_seed(2)))
        cases[name] = (op, y.expand(N_SAMPLES, -1), ref, bound)
    return model, cases


def gmm_swd(sampler, model, op, y, ref) -> float:
    """SWD between N samples of `sampler` for measurement y and the exact posterior samples `ref`."""
    from guided_diffusion.analytic import sliced_wasserstein

    x = sampler.sample(model, op, y, sigma=SIGMA, shape=(N_SAMPLES, *SHAPE),
                       generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return sliced_wasserstein(x, ref)


def run_config_on_tiny_adm(path: Path, sigma: float = 0.05, **sampler_overrides) -> torch.Tensor:
    """A shipped config shrunk to 32x32 (sampler parameters overridden, e.g. steps=2) run through
    `check_task` and `sample` on the tiny random ADM, on a random image's measurement with noise
    level `sigma` assumed; returns the output after checking its shape and finiteness."""
    from configs import load_config
    from guided_diffusion import TINY_FLAGS, create_model
    from operators import build_operator
    from samplers import build_sampler

    cfg = load_config(str(path))
    sampler = build_sampler(**{**cfg["sampler"], **sampler_overrides})
    spec = dict(cfg["task"]["operator"])
    spec.update({k: v for k, v in (("box_size", 16), ("margin", 4)) if k in spec})
    if spec["name"] in ("inpainting", "ddrm_deblurring"):  # built for 256 x 256 images
        spec["image_size"] = 32
    op = build_operator(**spec)
    sampler.check_task(op)
    model = create_model(**TINY_FLAGS).eval().requires_grad_(False)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = sampler.sample(model, op, op(x), sigma=sigma, shape=tuple(x.shape), generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    return out
