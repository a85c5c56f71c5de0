"""Our DPS, DPPS, DiffPIR and GDP against their official code: the golden trajectories of
tests/data/golden_samplers (the official code run on the golden UNet, tests/data/README.md), with the
official random draws fed to our samplers in the official order. Numbers: docs/equivalence.md."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional

import pytest
import torch
from conftest import GOLDEN_SAMPLERS_DIR, checkpoint_file

from guided_diffusion import create_model
from operators import build_operator
from operators.resize import bicubic_upsample
from samplers import build_sampler

pytestmark = pytest.mark.usefixtures("one_thread")

# The draws our samplers make (README "Draws"); the official code's other draws never reach its output.
OUR_ROLES = ("x_T", "ancestral", "dpps_candidates", "eta_noise", "zeta_noise")
# Full chains compared at the output: all files but the chaotic one.
CHAINS = ("dps_sr4", "dpps_sr4", "diffpir_deblur_gaussian", "diffpir_sr4", "diffpir_inpaint_random",
          "gdp_sr4_x0", "gdp_lowlight_patches")
DIFFPIR = ("diffpir_deblur_gaussian", "diffpir_sr4", "diffpir_inpaint_random")
FLOAT32_TOL = 1e-5   # the bound; measured 9.5e-7 .. 3.7e-6 (docs/equivalence.md)
FLOAT64_TOL = 1e-6   # DiffPIR in float64; measured 7.8e-15 (deblur), 1.4e-11 (SR), 7.2e-15 (inpainting)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|, the golden README's relative difference."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@lru_cache(maxsize=None)
def load_case(name: str) -> Dict[str, Any]:
    return torch.load(GOLDEN_SAMPLERS_DIR / f"{name}.pt", weights_only=True)


@lru_cache(maxsize=None)
def golden_unet(dtype: torch.dtype) -> torch.nn.Module:
    """The network every official run used (golden_unet_small.pt), frozen, in `dtype`."""
    ckpt = torch.load(checkpoint_file("golden_unet_small.pt"), weights_only=True)
    model = create_model(**ckpt["flags"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval().requires_grad_(False).to(dtype)


@lru_cache(maxsize=None)
def official_draws(name: str) -> List[Dict[str, Any]]:
    """The official run's draws in call order, each {"role", "step", "tensor"}, rebuilt as the
    trimmed file says (consecutive torch.randn of Generator(seed); zeros where the official code
    drew nothing it reads) and checked against the stored fingerprints of the official tensors."""
    case = load_case(name)
    if "tensor" in case["draws"][0]:  # a tape that is not one seeded generator's: stored as is
        return [{"role": e["role"], "step": e["step"], "used": e["used"], "tensor": e["tensor"]} for e in case["draws"]]
    generator = torch.Generator().manual_seed(case["seed"])
    draws = []
    for k, entry in enumerate(case["draws"]):
        shape = tuple(entry["shape"])
        tensor = torch.randn(shape, generator=generator) if entry["drawn"] else torch.zeros(shape)
        flat = tensor.flatten()
        assert torch.allclose(flat[:len(entry["head"])], entry["head"].to(flat.dtype), rtol=0, atol=1e-6), f"{name}: draw {k} differs"
        assert math.isclose(flat.double().sum().item(), entry["sum"], rel_tol=1e-6, abs_tol=1e-4), f"{name}: draw {k}"
        draws.append({"role": entry["role"], "step": entry["step"], "used": entry["used"], "tensor": tensor})
    return draws


def our_draws(name: str, step: Optional[int] = None) -> List[torch.Tensor]:
    """The official draws our samplers consume, in order (all, or those of one step)."""
    return [d["tensor"] for d in official_draws(name)
            if d["role"] in OUR_ROLES and (step is None or d["step"] == step)]


class Tape:
    """Stands in for torch.randn while a sampler runs: serves `draws` in order, each checked for
    the requested size and for coming from the sampler's own generator, cast to the dtype asked."""

    def __init__(self, draws: List[torch.Tensor], generator: torch.Generator):
        self.draws, self.generator, self.used = draws, generator, 0

    def __call__(self, *size: Any, generator: Optional[torch.Generator] = None, dtype: Optional[torch.dtype] = None,
                 device: Any = None) -> torch.Tensor:
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        assert generator is self.generator, "a draw that is not from the sampler's generator"
        assert self.used < len(self.draws), "the sampler drew more than the official code"
        draw = self.draws[self.used]
        self.used += 1
        # DPPS draws its candidates as (B, n_t, C, H, W); the official code as (n_t, C, H, W).
        assert draw.numel() == math.prod(shape), f"draw {self.used - 1}: official {tuple(draw.shape)}, ours {shape}"
        return draw.reshape(shape).to(dtype or torch.float32)


def with_tape(monkeypatch: pytest.MonkeyPatch, draws: List[torch.Tensor], run: Callable[[torch.Generator], Any]) -> Any:
    """run(generator) with torch.randn serving `draws`; every draw must be consumed."""
    generator = torch.Generator()
    tape = Tape(draws, generator)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn", tape)
        result = run(generator)
    assert tape.used == len(draws), f"the sampler drew {tape.used} of the official {len(draws)} draws"
    return result


def operator(case: Dict[str, Any]) -> Any:
    """build_operator(**case["operator"]) with the stored state (mask, kernel, initial f and M)."""
    op = build_operator(**case["operator"])
    with torch.no_grad():
        for key, target in (("mask", "mask"), ("kernel", "kernel"), ("f_init", "f"), ("M_init", "M")):
            if key in case and hasattr(op, target):
                getattr(op, target).copy_(case[key].reshape(getattr(op, target).shape))
    return op


def run_chain(monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype = torch.float32):
    """Our sampler over the whole chain from the file's inputs and the official draws: (output, operator)."""
    case = load_case(name)
    op, sampler = operator(case), build_sampler(**case["sampler"])
    out = with_tape(monkeypatch, our_draws(name), lambda g: sampler.sample(
        golden_unet(dtype), op, case["y"].to(dtype), sigma=case["sigma"], shape=case["x_init"].shape, generator=g))
    return out, op


@pytest.mark.parametrize("name", CHAINS)
def test_full_chain_matches_the_official_output(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """float32 chain against the official output, or its float64 run where the file has one
    (DiffPIR: the official float32 output is itself 4.3e-2 / 7.5e-3 / 6.4e-6 off it, ours is not:
    the data step runs in float64). Low-light: the blind gain f and map M as well."""
    case = load_case(name)
    out, op = run_chain(monkeypatch, name)
    reference = case.get("output_float64", case["output"])
    assert out.dtype == torch.float32 and rel(out, reference) < FLOAT32_TOL
    if "f_final" in case:
        assert rel(op.f.detach(), case["f_final"]) < FLOAT32_TOL and rel(op.M.detach(), case["M_final"]) < FLOAT32_TOL


@pytest.mark.parametrize("name", DIFFPIR)
def test_diffpir_float64_chain(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Network, draws and sampler in float64 against the official code's float64 run."""
    out, _ = run_chain(monkeypatch, name, torch.float64)
    assert out.dtype == torch.float64 and rel(out, load_case(name)["output_float64"]) < FLOAT64_TOL


def test_diffpir_sr_default_kernel_is_the_official_table() -> None:
    """The golden SR file's data-step kernel (the official kernels_bicubicx234.mat x4 entry, float32)
    is the default kernel of sr_blur_decimation at scale 4, bit for bit, so its replay needs no
    stored kernel; the analytic bicubic_sr_kernel differs from it by up to 1.9e-3."""
    case = load_case("diffpir_sr4")
    default = build_operator(**case["operator"]).kernel
    assert torch.equal(default, case["kernel"].double())
    analytic = build_operator(**case["operator"], kernel="bicubic_sr_kernel").kernel
    assert 1.8e-3 < (analytic - default).abs().max().item() < 1.9e-3


@pytest.mark.parametrize("name", DIFFPIR + ("dpps_sr4",))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_start_matches_the_official(monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype) -> None:
    """x_T from the x_T draw: DiffPIR SR from the OpenCV-bicubic upsampling of y with no t_y term,
    deblur / inpainting with the t_y formula, DPPS's aligned start. Bounds: float32 rounding of
    terms of size 1 (measured <= 6.1e-8); float64 against the official float64 start (DiffPIR)."""
    case = load_case(name)
    sampler = build_sampler(**case["sampler"])
    x = with_tape(monkeypatch, our_draws(name, step=-1), lambda g: sampler.initial_state(
        case["x_init"].shape, operator(case), case["y"].to(dtype), case["sigma"], g, torch.device("cpu"), dtype))
    if dtype == torch.float32:
        assert rel(x, case["x_init"]) < 1e-6
    elif "x_init_float64" in case:
        assert rel(x, case["x_init_float64"]) < 1e-9


def test_bicubic_upsampling_is_opencvs() -> None:
    """The official SR start holds OpenCV's INTER_CUBIC upsampling U of y01 exactly:
    x_init_float64 = sqrt(abar_999) (2 U - 1) + sqrt(1 - abar_999) z, so (2 U - 1) is recovered from
    it in float64 (to ~1e-13) and compared with ours of y (measured 3.5e-14; OpenCV computes in
    float32, hence the bound 1e-9)."""
    case = load_case("diffpir_sr4")
    ac = build_sampler(**case["sampler"]).train_alphas_cumprod[999].item()
    z = our_draws("diffpir_sr4", step=-1)[0].double()
    opencv = (case["x_init_float64"] - math.sqrt(1 - ac) * z) / math.sqrt(ac)
    ours = bicubic_upsample(case["y"].double(), 4)
    assert ours.shape == (1, 3, 32, 32) and rel(ours, opencv) < 1e-9


def test_chaotic_chain_step_by_step() -> None:
    """dps_inpaint_random: a one-ulp change of x_T moves the official output by 0.42, so each step
    starts from the official state (teacher forcing) and is compared with the official x0_hat and
    x_t. The network's own float32 rounding differs from the official run's at ~1e-6 (the UNet
    tests' float32 bound) and x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies it by up to
    1 / sqrt(abar_999) = 157: bound 1e-6 / sqrt(abar_t) + FLOAT32_TOL (measured: x_t 1.7e-5 and
    x0_hat 3.8e-5 at t = 999, x_t <= 1.8e-7 over the last 25 steps)."""
    name = "dps_inpaint_random"
    case = load_case(name)
    op, sampler, model = operator(case), build_sampler(**case["sampler"]), golden_unet(torch.float32)
    n = len(case["timesteps"])
    for k in range(n):
        i = n - 1 - k
        x = case["x_init"] if k == 0 else case["x_t"][k - 1]
        t = torch.full((1,), i, dtype=torch.long)
        with pytest.MonkeyPatch.context() as monkeypatch:
            x_next, x0_hat = with_tape(monkeypatch, our_draws(name, step=k),
                                       lambda g: sampler.step(model, x, t, op, case["y"], case["sigma"], g))
        bound = 1e-6 / math.sqrt(sampler.diffusion.alphas_cumprod[i].item()) + FLOAT32_TOL
        assert rel(x0_hat, case["x0_hat"][k]) < bound, k
        assert rel(x_next, case["x_t"][k]) < bound, k


# ---- The method zoo: README "Checking a reimplementation of the zoo" ----------------------------
ZOO_METHODS = ("ddrm", "ddnm", "pgdm", "reddiff", "daps", "mcg", "dpir")
ZOO_CASES = tuple(sorted(p.stem for p in GOLDEN_SAMPLERS_DIR.glob("*.pt") if p.stem.split("_")[0] in ZOO_METHODS))
ZOO_TOL = 1e-4  # the issues' bound on max|out - output| / max|output|


def zoo_tapes(name: str) -> Dict[str, List[torch.Tensor]]:
    """The checker's three tapes, without the measurement's and the data loader's draws:
    "used" (draws marked used), "named" (roles not starting with "unused"), "all"."""
    draws = [d for d in official_draws(name) if "measurement" not in d["role"] and "data_noise" not in d["role"]]
    return {"used": [d["tensor"] for d in draws if d["used"]],
            "named": [d["tensor"] for d in draws if not d["role"].startswith("unused")],
            "all": [d["tensor"] for d in draws]}


@lru_cache(maxsize=None)
def golden_drunet() -> torch.nn.Module:
    """DPIR's network: the golden DRUNet, loaded as users load a DRUNet file."""
    from guided_diffusion import load_model
    return load_model(checkpoint_file("golden_drunet_small.pt")).eval().requires_grad_(False)


def run_zoo_case(name: str, tape: List[torch.Tensor]) -> torch.Tensor:
    """The checker's call through the public API with torch.randn serving `tape` (consumed
    exactly, every draw from the generator passed to `sample`; torch.randn_like, which has no
    generator, is refused); the output on the file's value range (DPIR: [0, 1])."""
    case = load_case(name)
    model = golden_drunet() if case["method"] == "dpir" else golden_unet(torch.float32)
    op, sampler = operator(case), build_sampler(**case["sampler"])
    generator = torch.Generator().manual_seed(0)
    served = Tape(tape, generator)

    def global_rng(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a draw from the global RNG (torch.randn_like)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "randn", served)
        patch.setattr(torch, "randn_like", global_rng)
        out = sampler.sample(model, op, case["y"], sigma=case["sigma"], shape=case["image"].shape, generator=generator)
    assert served.used == len(tape), f"the sampler drew {served.used} of the tape's {len(tape)} draws"
    return (out + 1) / 2 if case["method"] == "dpir" else out


@pytest.mark.parametrize("name", ZOO_CASES)
def test_zoo_chain_matches_the_official_output(name: str) -> None:
    """Each zoo file replayed as the golden README's checker does: the first of its three tapes
    that our sampler consumes exactly must give the official output within ZOO_TOL."""
    case = load_case(name)
    errors = {}
    for kind, tape in zoo_tapes(name).items():
        try:
            out = run_zoo_case(name, tape)
        except AssertionError as err:  # this tape is not the one our sampler draws
            errors[kind] = str(err)
            continue
        assert rel(out, case["output"]) <= ZOO_TOL, f"{name} ({kind} tape): {rel(out, case['output']):.3g}"
        return
    pytest.fail(f"{name}: no tape consumed exactly: {errors}")
