"""Registry, YAML round trip, saved state, and the error messages of bad configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from operators import OperatorUnavailable, build_operator, list_operators, load_operator

# One YAML-style config per buildable operator (sizes kept small).
CONFIGS = {
    "super_resolution": {"scale_factor": 4, "mode": "bicubic"},
    "sr_blur_decimation": {"scale_factor": 2},
    "gaussian_blur": {"kernel_size": 9, "intensity": 1.5, "boundary": "reflect"},
    "uniform_blur": {"kernel_size": 5, "boundary": "circular"},
    "motion_blur": {"kernel_size": 15, "intensity": 0.5, "seed": 11},
    "inpainting": {"mask_type": "random", "image_size": [32, 32], "mask_prob_range": [0.3, 0.7], "seed": 4},
    "colorization": {},
    "ddrm_deblurring": {"image_size": 32},
    "phase_retrieval": {"oversample": 2.0},
    "low_light": {"image_size": [32, 32], "f_init": 0.3, "M_init": 0.01},
    "hdr": {"image_size": 32, "seed": 2},
}
UNAVAILABLE = {"nonlinear_blur"}


def test_every_registered_operator_has_a_config() -> None:
    assert set(CONFIGS) | UNAVAILABLE == set(list_operators())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_yaml_round_trip(name: str) -> None:
    """Params -> yaml.safe_dump -> safe_load -> rebuild gives the same operator output."""
    op = build_operator(name, **CONFIGS[name])
    text = yaml.safe_dump({"operator": {"name": op.name, **op.params}})
    cfg = yaml.safe_load(text)["operator"]
    again = build_operator(cfg.pop("name"), **cfg)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    assert torch.equal(op(x), again(x))
    assert torch.equal(op(x), op.forward(x))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_save_and_load_state(name: str, tmp_path) -> None:
    """``save`` / ``load_operator`` restore name, params and random state (mask, kernel, f, M)."""
    op = build_operator(name, **CONFIGS[name])
    with torch.no_grad():
        for p in op.parameters():  # a blind sampler would have changed f and M
            p.add_(0.125)
    op.save(tmp_path / "op.pt")
    again = load_operator(tmp_path / "op.pt")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert again.name == name and again.params == op.params
    assert torch.equal(op(x), again(x))


def test_state_from_a_generator_is_restored(tmp_path) -> None:
    """A kernel drawn from a numpy Generator is not reproducible from params: state carries it."""
    op = build_operator("motion_blur", kernel_size=15, generator=np.random.default_rng(123))
    assert "generator" not in op.params
    op.save(tmp_path / "m.pt")
    assert torch.equal(load_operator(tmp_path / "m.pt").kernel, op.kernel)
    assert not torch.equal(build_operator("motion_blur", kernel_size=15).kernel, op.kernel)


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ValueError, match=r"unknown operator 'gausian_blur' \(did you mean 'gaussian_blur'\?\)") as e:
        build_operator("gausian_blur")
    assert "super_resolution" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name, params, word", [
    ("gaussian_blur", {"sigma": 3.0}, "sigma"),
    ("gaussian_blur", {"boundary": "zero"}, "boundary"),
    ("gaussian_blur", {"intensity": -1.0}, "intensity"),
    ("gaussian_blur", {"kernel_size": 6}, "odd kernel size"),
    ("motion_blur", {"intensity": 2.0}, "intensity"),
    ("motion_blur", {"seed": "abc"}, "seed"),
    ("inpainting", {"mask_type": "circle"}, "mask_type"),
    ("inpainting", {"mask_prob_range": [0.9, 0.1]}, "mask_prob_range"),
    ("inpainting", {"image_size": [32, 32], "mask_type": "box"}, "box_size"),
    ("inpainting", {"mask_path": "m.png", "mask_type": "box"}, "mask_path"),
    ("super_resolution", {"scale_factor": 2.5}, "scale_factor"),
    ("super_resolution", {"scale": 4}, "scale"),
    ("phase_retrieval", {"oversample": -1}, "oversample"),
    ("low_light", {"image_size": [0, 4]}, "image_size"),
    ("low_light", {"f_init": "x"}, "f_init"),
])
def test_bad_params_raise_one_line_naming_them(name: str, params: dict, word: str) -> None:
    with pytest.raises(ValueError) as e:
        build_operator(name, **params)
    assert word in str(e.value) and "\n" not in str(e.value)


def test_nonlinear_blur_explains_missing_weights() -> None:
    with pytest.raises(OperatorUnavailable) as e:
        build_operator("nonlinear_blur")
    message = str(e.value)
    assert "GOPRO_wVAE.pth" in message and "blur-kernel-space-exploring" in message and "\n" not in message
