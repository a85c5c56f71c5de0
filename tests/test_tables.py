"""The published tables' rows: which are runnable (reproduce.py --list), the comparison rows'
protocol (the same measurements as the table's own method), and every comparison config of
configs/tables/ run on the tiny random ADM."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import torch
import yaml

from configs import load_config
from evaluation import load_tables
from guided_diffusion import TINY_FLAGS, create_model
from operators import build_operator, sigma_from_255
from samplers import build_sampler
from scripts.reproduce import main as reproduce_main
from scripts.reproduce import row_problem

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
# (runnable rows, rows) per table of evaluation/published.yaml.
RUNNABLE = {"dps_ffhq": (14, 14), "dps_imagenet": (14, 14), "dpps_ffhq": (4, 4), "dpps_imagenet": (4, 4),
            "diffpir_ffhq_noisy": (11, 11), "diffpir_imagenet_noisy": (11, 11), "diffpir_ffhq_noiseless": (22, 22),
            "gdp_imagenet": (8, 8), "demo": (60, 60)}
# The method whose configs define each table's protocol; the other rows must make its measurements.
OWN = {"dps_ffhq": "DPS", "dps_imagenet": "DPS", "diffpir_ffhq_noisy": "DiffPIR",
       "diffpir_imagenet_noisy": "DiffPIR", "diffpir_ffhq_noiseless": "DiffPIR", "gdp_imagenet": "GDP"}
TABLE_CONFIGS = sorted((REPO / "configs" / "tables").glob("*/*.yaml"))


def raw(path: str) -> Dict[str, Any]:
    return yaml.safe_load((REPO / path).read_text())


def test_runnable_rows_per_table() -> None:
    """Every row of every table has a config whose sampler is registered and accepts its operator
    (DiffPIR's tables: DPS, DDRM and DPIR rows included), as reproduce.py --list counts them."""
    tables = load_tables()
    assert set(tables) == set(RUNNABLE)
    for name, table in tables.items():
        problems = {f"{r.label} / {r.task}": row_problem(r) for r in table.rows}
        assert (sum(p is None for p in problems.values()), len(table.rows)) == RUNNABLE[name], (name, problems)
    for name in ("diffpir_ffhq_noisy", "diffpir_imagenet_noisy", "diffpir_ffhq_noiseless"):
        methods = {r.method for r in tables[name].rows}
        assert methods == {"DiffPIR", "DPS", "DDRM", "DPIR"} and all(r.config for r in tables[name].rows)
        for row in tables[name].rows:
            cfg = load_config(str(REPO / row.config))
            sampler = build_sampler(**cfg["sampler"])
            spec = dict(cfg["task"]["operator"])
            op = build_operator(spec.pop("name"), **spec)
            sampler.check_task(op)
            expected = {"DiffPIR": row.nfe, "DPS": "1000", "DDRM": "20", "DPIR": ">20"}[row.method]
            assert row.nfe == expected and sampler.name == row.method.lower()
            if row.method == "DPIR":
                assert sampler.denoiser == "diffusion"  # DiffPIR issue #29
            else:
                assert getattr(sampler, "nfe", sampler.diffusion.num_timesteps) == int(row.nfe)


def test_comparison_rows_make_the_tables_own_measurements() -> None:
    """A comparison row (configs/tables/<table>/) restores exactly the measurements of the table's own
    method for that task: model, operator block, noise, images, resize and seed equal. One
    documented exception: DDRM's SR rows in DiffPIR's tables use the separable bicubic_sr_kernel
    (DDRM needs an SVD; the table kernel has none)."""
    tables = load_tables()
    checked = 0
    for name, own in OWN.items():
        table = tables[name]
        reference = {}
        for row in table.rows:
            if row.method == own:
                cfg = raw(row.config)
                reference.setdefault(row.task, []).append(cfg)
        for row in table.rows:
            if row.method == own:
                continue
            assert row.config == f"configs/tables/{name}/{row.method.lower()}_{row.task}.yaml"
            cfg = raw(row.config)
            assert cfg["output"] == f"results/tables/{name}/{row.method.lower()}_{row.task}"
            for ref in reference[row.task]:
                task = cfg["task"]
                if row.method == "DDRM" and row.task == "sr4" and name.startswith("diffpir"):
                    assert task["operator"]["kernel"] == "bicubic_sr_kernel" and ref["task"]["operator"]["kernel"] == "bicubic_table"
                    task = {**task, "operator": {**task["operator"], "kernel": "bicubic_table"}}
                assert task == ref["task"], (name, row.label, row.task)
                assert (cfg["model"], cfg["data"], cfg["seed"]) == (ref["model"], ref["data"], ref["seed"])
            checked += 1
    assert checked == len(TABLE_CONFIGS) == 50


def test_list_names_rows_that_cannot_run(tmp_path: Path, capsys) -> None:
    """--list counts a row whose sampler is not registered as not runnable and says why; a run
    leaves it out with a note instead of failing on the config."""
    config = yaml.safe_load((REPO / "configs/tables/dps_ffhq/mcg_sr4.yaml").read_text())
    config["sampler"] = {"name": "not_a_sampler", "steps": 2}
    (tmp_path / "future.yaml").write_text(yaml.safe_dump(config))
    table = {"tables": {"t": {"title": "t", "source": "s", "protocol": "p", "metrics": ["psnr"], "rows": [
        {"method": "DPS", "task": "sr4", "config": "configs/dps/ffhq_sr4.yaml"},
        {"method": "Future", "task": "sr4", "config": str(tmp_path / "future.yaml")},
        {"method": "Paper", "task": "sr4", "published": {"psnr": 1.0}}]}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(table))
    assert reproduce_main(["--published", str(tmp_path / "t.yaml"), "--list"]) == 0
    out = capsys.readouterr().out
    assert "t: t (1 runnable of 3 rows)" in out
    assert "not runnable: Future / sr4: sampler 'not_a_sampler' is not registered" in out


@pytest.mark.parametrize("path", TABLE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_table_config_runs_on_the_tiny_adm(path: Path) -> None:
    """Each comparison config, shrunk to 32x32 and 2 steps, runs through `sample` on the tiny random
    ADM with the config's operator and noise level."""
    cfg = load_config(str(path))
    params = {**cfg["sampler"], "steps": 2}
    if "timestep_respacing" in params:
        params["timestep_respacing"] = "ddim2"
    sampler = build_sampler(**params)
    spec = dict(cfg["task"]["operator"])
    if spec["name"] == "inpainting":  # masks are built for 256 x 256 images
        spec.update(image_size=32, **({"box_size": 16, "margin": 4} if spec["mask_type"] == "box" else {}))
    if spec.get("kernel_size", 0) > 31:  # reflect padding needs the kernel inside the image
        spec["kernel_size"] = 31
    op = build_operator(**spec)
    noise = cfg["task"]["noise"] or {"name": "clean"}
    sigma = sigma_from_255(noise["sigma_255"]) if "sigma_255" in noise else noise.get("sigma", 0.0)
    model = create_model(**TINY_FLAGS).eval().requires_grad_(False)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = sampler.sample(model, op, op(x), sigma=sigma, shape=tuple(x.shape), generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
