"""reproduce.py and figure.py end to end on the tiny random ADM, two images, a test-only table over
the real DPS / DPPS configs (model, data and run folders overridden from the command line); sharded
sample.py runs (one process per rank) against a single-process run."""
from __future__ import annotations

import math

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from configs import ConfigError, load_config
from evaluation import EvaluationError, load_tables
from evaluation.baselines import GRADIENT_STD
from evaluation.sweep import classical_sweep, markdown, parse_grid, sweep
from evaluation.tables import Comparison, Row, Table, Timing
from guided_diffusion import TINY_FLAGS, create_model
from scripts.figure import main as figure_main
from scripts.reproduce import main as reproduce_main
from runs.restore import run

REPO = Path(__file__).resolve().parents[1]

TABLE = {"tables": {"tiny": {
    "title": "tiny", "source": "test", "protocol": "test", "metrics": ["psnr", "ssim"],
    "rows": [
        {"method": "DPS", "task": "sr4", "config": "configs/dps/ffhq_sr4.yaml",
         "published": {"psnr": 10.0, "ssim": {"value": 0.5, "verified": True}}},
        {"method": "DPPS", "task": "sr4", "config": "configs/dpps/ffhq_sr4.yaml", "published": {"psnr": 11.0}},
        {"method": "DDRM", "task": "sr4", "published": {"psnr": 12.0}},
    ]}}}


# One intra-op thread (conftest.one_thread): the tiny model gains nothing from threads, and on a
# small busy CPU waiting OpenMP threads made steps 10-20x slower. Training results are
# bit-identical only at equal thread counts.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reproduce")
    torch.manual_seed(0)
    model = create_model(**TINY_FLAGS)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    torch.save({"flags": TINY_FLAGS, "state_dict": model.state_dict()}, root / "tiny.pt")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"img{k}.png")
    (root / "table.yaml").write_text(yaml.safe_dump(TABLE))
    return root


def _args(root: Path, *extra: str) -> list:
    return ["--published", str(root / "table.yaml"), "--table", "tiny", "--limit", "2", "--results", str(root / "runs"),
            "--out", str(root / "tables"), "--set", f"model.checkpoint={root / 'tiny.pt'}",
            "--set", f"data.input={root / 'images'}", "--set", "data.resize=center_crop",
            "--set", "sampler.steps=2", "--set", "device=cpu", *extra]


def test_reproduce_runs_evaluates_and_compares(setup: Path, capsys) -> None:
    assert reproduce_main(_args(setup)) == 0
    printed = capsys.readouterr().out
    runs = {m: setup / "runs" / m / "ffhq_sr4-n2" for m in ("dps", "dpps")}
    for folder in runs.values():  # --limit 2 of 3 images, each written once
        assert sorted(p.name for p in (folder / "recon").glob("*.png")) == ["img0.png", "img1.png"]
        assert yaml.safe_load((folder / "config.yaml").read_text())["data"]["limit"] == 2
    rows = list(csv.DictReader((setup / "tables" / "tiny-n2.csv").open()))
    assert [(r["method"], r["metric"]) for r in rows] == [("DPS", "psnr"), ("DPS", "ssim"), ("DPPS", "psnr"),
                                                          ("DPPS", "ssim"), ("DDRM", "psnr"), ("DDRM", "ssim")]
    for r in rows[:4]:
        folder = runs[r["method"].lower()]
        measured = json.loads((folder / "metrics" / "summary.json").read_text())[r["metric"]]
        assert float(r["measured"]) == pytest.approx(measured, abs=1e-12) and r["n_images"] == "2"
        if r["published"]:
            assert float(r["difference"]) == pytest.approx(measured - float(r["published"]), abs=1e-12)
    assert rows[1]["verified"] == "True" and rows[0]["verified"] == "False"
    assert rows[3]["published"] == "" and rows[4]["measured"] == ""
    markdown = (setup / "tables" / "tiny-n2.md").read_text()
    assert "| DPS | sr4 | 2 | 10.00* |" in markdown and "| DDRM | sr4 | - | 12.00* | - | - |" in markdown
    assert markdown in printed

    # Resume: nothing is sampled again, the images are untouched.
    stamps = [p.stat().st_mtime_ns for p in sorted((runs["dps"] / "recon").glob("*.png"))]
    assert reproduce_main(_args(setup)) == 0
    assert "wrote 0 image(s)" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in sorted((runs["dps"] / "recon").glob("*.png"))] == stamps

    # The comparison figure: 2 images x (measurement, DPS, DPPS, ground truth) rows, one task column;
    # reproduce.py wrote the same figure next to its table.
    out = setup / "fig.png"
    assert figure_main(["--published", str(setup / "table.yaml"), "--table", "tiny", "--limit", "2",
                        "--results", str(setup / "runs"), "--out", str(out)]) == 0
    fig = np.array(Image.open(out))
    assert fig.shape == (16 + 2 + 8 * 34, 96 + 2 + 34, 3)
    assert np.array_equal(fig, np.array(Image.open(setup / "tables" / "tiny-n2.png")))
    recon = np.array(Image.open(runs["dpps"] / "recon" / "img1.png"))
    top, left = 16 + 2 + 6 * 34, 96 + 2  # second image's DPPS row; its PSNR caption covers the bottom strip
    assert np.array_equal(fig[top:top + 16, left:left + 32], recon[:16])
    assert not np.array_equal(fig[top + 24:top + 32, left:left + 32], recon[24:])
    assert figure_main(["--published", str(setup / "table.yaml"), "--table", "tiny", "--limit", "2",
                        "--results", str(setup / "runs"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_reproduce_checks_before_sampling(setup: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LPIPS_BACKBONE", str(setup / "missing.pth"))
    assert reproduce_main(_args(setup, "--metrics", "psnr,lpips", "--results", str(setup / "other"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LPIPS_BACKBONE" in err[0] and not (setup / "other").exists()
    assert reproduce_main(_args(setup, "--set", "output=x")) == 2
    assert "use --results" in capsys.readouterr().err
    assert reproduce_main(["--published", str(setup / "table.yaml"), "--table", "tin"]) == 2
    assert "did you mean 'tiny'" in capsys.readouterr().err


def test_table_file_errors(tmp_path: Path) -> None:
    for row, match in (({"method": "x", "task": "sr4", "kind": "oracle"}, "kind must be one of sampler, baseline"),
                       ({"method": "x", "task": "sr4", "kind": "baseline"}, "a baseline row needs the config")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"tables": {"t": {**TABLE["tables"]["tiny"], "rows": [row]}}}))
        with pytest.raises(EvaluationError, match=match):
            load_tables(tmp_path / "bad.yaml")
    for extra, match in (({"optional_metrics": ["lpips"]}, "must be columns"),
                         ({"variants": {"bf16": "model.precision=bf16"}}, "name -> list of key=value"),
                         ({"variant": {}}, "unknown key\\(s\\) \\['variant'\\]")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"tables": {"t": {**TABLE["tables"]["tiny"], **extra}}}))
        with pytest.raises(EvaluationError, match=match):
            load_tables(tmp_path / "bad.yaml")
    bad = {"tables": {"t": {**TABLE["tables"]["tiny"], "metrics": ["psnr", "fld"]}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(EvaluationError, match="unknown metric\\(s\\) \\['fld'\\]"):
        load_tables(tmp_path / "bad.yaml")
    bad = {"tables": {"t": {**TABLE["tables"]["tiny"], "rows": [{"method": "DPS", "task": "sr4",
                                                                  "published": {"lpips": 0.2}}]}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(EvaluationError, match="metric 'lpips' is not a column"):
        load_tables(tmp_path / "bad.yaml")


def test_reproduce_under_torchrun_shares_the_images_and_evaluates_once(setup: Path) -> None:
    results = setup / "ranks"
    args = _args(setup, "--limit", "3", "--results", str(results), "--out", str(setup / "tables_ranks"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on a small CPU: avoid thread oversubscription
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "scripts" / "reproduce.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    # Rank 0 takes images 0 and 2, rank 1 image 1: per config one "wrote 2" and one "wrote 1".
    assert sorted(done.stdout.count(f"wrote {k} image(s)") for k in (1, 2)) == [2, 2]
    for method in ("dps", "dpps"):
        assert len(list((results / method / "ffhq_sr4-n3" / "recon").glob("*.png"))) == 3
    rows = list(csv.DictReader((setup / "tables_ranks" / "tiny-n3.csv").open()))
    assert [r["n_images"] for r in rows[:4]] == ["3"] * 4


def test_sharded_sample_run_writes_each_image_once_and_equals_one_process(setup: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    def config(out: str) -> dict:
        return load_config("configs/dps/ffhq_sr4.yaml", [
            f"model.checkpoint={setup / 'tiny.pt'}", f"data.input={setup / 'images'}",
            "data.resize=center_crop", "sampler.steps=2", "batch_size=2", "device=cpu", f"output={tmp_path / out}"])

    monkeypatch.setenv("WORLD_SIZE", "2")
    # The ranks run one after the other in this process, so the claim's barrier (a real process
    # group: the torchrun test above) has nobody to wait for.
    monkeypatch.setattr("runs.restore.barrier", lambda rank: None)
    written = {}
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        written[rank] = sorted(p.name for p in run(config("sharded")).written)
    assert written == {0: ["img0.png", "img2.png"], 1: ["img1.png"]}
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert len(run(config("single")).written) == 3
    for k in range(3):
        assert (tmp_path / "sharded/recon" / f"img{k}.png").read_bytes() == \
            (tmp_path / "single/recon" / f"img{k}.png").read_bytes()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="outside"):
        run(config("single"))


DEMO = {"tables": {"demo": {
    "title": "demo", "source": "test", "protocol": "test", "metrics": ["psnr", "ssim", "lpips"],
    "optional_metrics": ["lpips"], "variants": {"bf16": ["model.precision=bf16"]},
    "rows": [
        {"method": "DPS", "task": "sr2", "nfe": 100, "config": "configs/demo/sr2/dps.yaml"},
        {"method": "bicubic", "kind": "baseline", "task": "sr2", "config": "configs/demo/sr2/baseline.yaml"},
        {"method": "DiffPIR", "task": "gaussian_deblur", "nfe": 100, "config": "configs/demo/gaussian_deblur/diffpir.yaml"},
        {"method": "Wiener", "kind": "baseline", "task": "gaussian_deblur",
         "config": "configs/demo/gaussian_deblur/baseline.yaml"},
    ]}}}


def test_demo_table_runs_baselines_variants_and_times_each_run(tmp_path: Path, capsys, monkeypatch) -> None:
    # The shipped demo configs and prior on the first test crop, 2 steps; LPIPS weights missing.
    monkeypatch.setenv("LPIPS_BACKBONE", str(tmp_path / "missing.pth"))
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(DEMO))
    args = ["--published", str(tmp_path / "table.yaml"), "--table", "demo", "--limit", "1", "--results",
            str(tmp_path / "runs"), "--out", str(tmp_path / "tables"), "--set", "sampler.steps=2", "--set", "device=cpu"]
    runs = tmp_path / "runs"
    # One task first (a long table can be run task by task), then the whole table.
    assert reproduce_main([*args, "--tasks", "gaussian_deblur"]) == 0
    assert not (runs / "sr2").exists()
    assert "| sr2 |" not in (tmp_path / "tables" / "demo-n1-gaussian_deblur.md").read_text()
    deblur = json.loads((runs / "gaussian_deblur" / "diffpir-n1" / "metrics" / "wall_time.json").read_text())
    assert reproduce_main([*args, "--tasks", "sr3"]) == 2
    assert "known: sr2, gaussian_deblur" in capsys.readouterr().err
    assert reproduce_main(args) == 0
    printed = capsys.readouterr().out
    assert "leaving out lpips" in printed and "LPIPS_BACKBONE" in printed
    assert json.loads((runs / "gaussian_deblur" / "diffpir-n1" / "metrics" / "wall_time.json").read_text()) == deblur
    folders = {name: runs / name for name in ("sr2/dps-n1", "sr2/dps-n1-bf16", "sr2/baseline-n1",
                                              "gaussian_deblur/diffpir-n1", "gaussian_deblur/diffpir-n1-bf16",
                                              "gaussian_deblur/baseline-n1")}
    timings = {}
    for name, folder in folders.items():
        assert [p.name for p in (folder / "recon").glob("*.png")] == ["chelsea_0.png"], name
        timing = json.loads((folder / "metrics" / "wall_time.json").read_text())
        assert timing["images"] == 1 and timing["seconds"] > 0
        timings[name] = timing
    assert yaml.safe_load((folders["sr2/dps-n1-bf16"] / "config.yaml").read_text())["model"]["precision"] == "bf16"
    # The classical baselines restore the samplers' measurements (noise included): equal PNGs (load_image
    # returns contiguous tensors, so the FFT blur rounds alike in both).
    for task, sampler in (("sr2", "dps"), ("gaussian_deblur", "diffpir")):
        base, run = ((runs / task / name / "input" / "chelsea_0.png").read_bytes() for name in ("baseline-n1", f"{sampler}-n1"))
        assert base == run, task

    rows = list(csv.DictReader((tmp_path / "tables" / "demo-n1.csv").open()))
    measured = {(r["method"], r["variant"], r["metric"]): r for r in rows}
    assert len(rows) == 6 * 3 and measured[("DPS", "bf16", "lpips")]["measured"] == ""
    summary = {name: json.loads((folder / "metrics" / "summary.json").read_text()) for name, folder in folders.items()}
    assert "lpips" not in summary["sr2/dps-n1"]
    for (method, variant), name in {("DPS", ""): "sr2/dps-n1", ("DPS", "bf16"): "sr2/dps-n1-bf16",
                                    ("Wiener", ""): "gaussian_deblur/baseline-n1"}.items():
        row = measured[(method, variant, "psnr")]
        assert float(row["measured"]) == pytest.approx(summary[name]["psnr"], abs=1e-12)
        assert float(row["seconds"]) == pytest.approx(timings[name]["seconds"], abs=1e-9)
    markdown = (tmp_path / "tables" / "demo-n1.md").read_text()
    assert "| task | method | n | psnr | ssim | lpips | time s | bf16: psnr change | bf16: speed-up |" in markdown
    change = summary["sr2/dps-n1-bf16"]["psnr"] - summary["sr2/dps-n1"]["psnr"]
    speed = timings["sr2/dps-n1"]["seconds"] / timings["sr2/dps-n1-bf16"]["seconds"]
    assert f"| {change:+.2f} | {speed:.2f}x |" in markdown
    assert "| sr2 | bicubic | 1 |" in markdown and "lpips: not measured" in markdown
    best = max(summary["sr2/dps-n1"]["psnr"], summary["sr2/baseline-n1"]["psnr"])
    assert f"**{best:.2f}**" in markdown
    # The figure: measured, DPS, DiffPIR, classical, truth rows x (sr2, gaussian_deblur) columns.
    fig = np.array(Image.open(tmp_path / "tables" / "demo-n1.png"))
    assert fig.shape == (16 + 2 + 5 * 66, 96 + 2 + 2 * 66, 3)
    wiener = np.array(Image.open(folders["gaussian_deblur/baseline-n1"] / "recon" / "chelsea_0.png"))
    top, left = 16 + 2 + 3 * 66, 96 + 2 + 66
    assert np.array_equal(fig[top:top + 48, left:left + 64], wiener[:48])

    # Resume: nothing is sampled again and no time is added.
    assert reproduce_main(args) == 0
    assert "wrote 0 image(s)" in capsys.readouterr().out
    for name, folder in folders.items():
        assert json.loads((folder / "metrics" / "wall_time.json").read_text()) == timings[name]


def test_comparison_of_a_measured_table_bolds_the_best_and_compares_variants() -> None:
    rows = [Row("A", "t", "a.yaml", "100", 0, {}), Row("B", "t", "b.yaml", "100", 0, {}),
            Row("harmonic", "t", "c.yaml", None, 0, {}, "baseline")]
    table = Table("demo", "demo", "s", "p", ["psnr", "lpips"], rows, ["lpips"], {"bf16": ["model.precision=bf16"]})
    comparison = Comparison(table, {0: {"psnr": 20.0, "lpips": 0.3}, 1: {"psnr": 21.5, "lpips": 0.4},
                                    2: {"psnr": 21.0, "lpips": 0.2}}, {0: 4, 1: 4, 2: 4},
                            timing={0: Timing(10.0, 4), 1: Timing(9.0, 3), 2: Timing(0.5, 4)},
                            variants={"bf16": {0: {"psnr": 19.9}, 1: {"psnr": 21.625}}},
                            variant_timing={"bf16": {0: Timing(4.0, 4), 1: Timing(3.0, 2)}})
    lines = comparison.markdown().splitlines()
    assert "| t | A (100) | 4 | 20.00 | 0.3000 | 10 | -0.10 | 2.50x |" in lines
    assert "| t | B (100) | 4 | **21.50** | 0.4000 | 9 | +0.12 | 2.00x |" in lines  # (9/3) / (3/2)
    assert "| t | harmonic | 4 | 21.00 | **0.2000** | 0 | - | - |" in lines


def test_sweeps_score_each_point_on_the_validation_crops(tmp_path: Path) -> None:
    assert parse_grid(["sampler.zeta=0.5,1", "sampler.lambda_=7"]) == {"sampler.zeta": [0.5, 1], "sampler.lambda_": [7]}
    with pytest.raises(ConfigError, match="expected key=value1,value2"):
        parse_grid(["sampler.zeta"])
    points = sweep("configs/demo/sr2/diffpir.yaml", parse_grid(["sampler.zeta=0.5,1.0"]), "data/demo_val",
                   tmp_path, ["data.limit=1", "sampler.steps=2", "device=cpu"])
    assert [p.name for p in points] == ["zeta=0.5", "zeta=1.0"]
    for p in points:
        folder = tmp_path / "sr2" / "diffpir" / p.name
        assert [f.name for f in (folder / "recon").glob("*.png")] == ["motorcycle_right_0.png"]
        assert yaml.safe_load((folder / "config.yaml").read_text())["sampler"]["zeta"] == p.overrides["sampler.zeta"]
    assert points[0].psnr != points[1].psnr and all(p.seconds > 0 for p in points)
    again = sweep("configs/demo/sr2/diffpir.yaml", parse_grid(["sampler.zeta=0.5,1.0"]), "data/demo_val",
                  tmp_path, ["data.limit=1", "sampler.steps=2", "device=cpu"])
    assert [(p.psnr, p.seconds) for p in again] == [(p.psnr, None) for p in points]  # resumed, not resampled
    assert "| zeta=1.0 | " in markdown(again, "t") and "| resumed |" in markdown(again, "t")
    # A setting at which the sampler diverges is a failed point, never the best and never an abort.
    (diverged,) = sweep("configs/demo/sr2/daps.yaml", parse_grid(["sampler.lr=1.0"]), "data/demo_val", tmp_path,
                        ["data.limit=1", "sampler.steps=2", "sampler.ode_steps=1", "sampler.langevin_steps=20", "device=cpu"])
    assert diverged.failed == 1 and math.isnan(diverged.psnr)
    table = markdown([*points, diverged], "t")
    assert "| lr=1.0 | failed (1 image(s)" in table and f"**{max(p.psnr for p in points):.2f}**" in table
    # The in-memory classical sweep scores what the baseline run writes for the same measurements.
    from runs.baseline import run as baseline_run
    from evaluation import Networks, evaluate, pair_images
    config = "configs/demo/gaussian_deblur/baseline.yaml"
    (point,) = classical_sweep(config, {"gradient_std": [GRADIENT_STD]}, "data/demo_val")
    out = baseline_run(load_config(config, ["data.input=data/demo_val", "device=cpu"]), output=str(tmp_path / "wiener")).folder
    summary = evaluate(pair_images(out / "recon", out / "label"), ["psnr", "ssim"], Networks()).summary
    # Equal up to a few pixels one 8-bit step apart (the FFT's rounding depends on memory alignment).
    assert point.psnr == pytest.approx(summary["psnr"], abs=1e-4) and point.ssim == pytest.approx(summary["ssim"], abs=1e-5)


def test_demo_table_cells_of_a_task_share_the_measurement_and_the_budget() -> None:
    from samplers import build_sampler
    table = load_tables()["demo"]
    measurements: dict = {}
    for row in table.rows:
        cfg = load_config(str(REPO / row.config))
        assert cfg["data"]["input"] == "data/demo" and Path(cfg["output"]).parent.name == row.task
        measurements.setdefault(row.task, []).append((cfg["model"]["checkpoint"], cfg["task"], cfg["data"], cfg["seed"]))
        if row.kind == "sampler":  # equal network evaluations per image
            sampler = build_sampler(**cfg["sampler"])
            assert getattr(sampler, "nfe", sampler.diffusion.num_timesteps) == 100 and row.nfe == "100"
    assert list(measurements) == ["sr2", "sr4", "inpaint_random", "inpaint_box", "gaussian_deblur"]
    assert all(len(ms) == 12 and all(m == ms[0] for m in ms) for ms in measurements.values())
    assert [r.kind for r in table.rows].count("baseline") == 5
    for task in ("sr2", "inpaint_random"):  # the README's demo configs make the same measurements
        readme = load_config(str(REPO / "configs" / "demo" / f"{task}.yaml"))
        assert measurements[task][0][1:] == (readme["task"], readme["data"], readme["seed"])
