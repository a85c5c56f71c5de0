"""Every shipped run config validates, and builds its sampler and operator (or fails as documented)."""
from __future__ import annotations

from pathlib import Path

import pytest

from configs import load_config
from operators import OperatorUnavailable, build_operator
from samplers import build_sampler

REPO = Path(__file__).resolve().parents[1]
RUN_CONFIGS = sorted(p for sub in ("dps", "dpps", "diffpir", "gdp", "reddiff", "daps", "mcg", "dpir", "ddnm", "pgdm", "ddrm", "demo") for p in (REPO / "configs" / sub).glob("*.yaml"))


def test_table_configs_exist() -> None:
    names = {p.relative_to(REPO / "configs").as_posix() for p in RUN_CONFIGS}
    for data in ("ffhq", "imagenet"):
        for task in ("sr4", "inpaint_box", "inpaint_random", "gaussian_deblur", "motion_deblur",
                     "phase_retrieval", "nonlinear_deblur"):
            assert f"dps/{data}_{task}.yaml" in names
        for task in ("sr4", "inpaint_random", "gaussian_deblur", "motion_deblur"):
            assert f"dpps/{data}_{task}.yaml" in names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_config_builds(path: Path) -> None:
    cfg = load_config(str(path))
    sampler = build_sampler(**cfg["sampler"])
    assert sampler.diffusion.num_timesteps == cfg["sampler"]["steps"]
    spec = cfg["task"]["operator"]
    if spec is None:
        return
    params = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "nonlinear_blur":
        with pytest.raises(OperatorUnavailable, match="KernelWizard"):
            build_operator("nonlinear_blur", **params)
    else:
        assert build_operator(spec["name"], **params).name == spec["name"]
