"""reproduce.py and figure.py end to end on the tiny random ADM, two images, a test-only table over
the real DPS / DPPS configs (model, data and run folders overridden from the command line); sharded
sample.py runs (one process per rank) against a single-process run."""
from __future__ import annotations

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
from guided_diffusion import TINY_FLAGS, create_model
from scripts.figure import main as figure_main
from scripts.reproduce import main as reproduce_main
from scripts.sample import run

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

    # The comparison figure: 2 images x (measurement, DPS, DPPS, ground truth).
    out = setup / "fig.png"
    assert figure_main(["--published", str(setup / "table.yaml"), "--table", "tiny", "--limit", "2",
                        "--results", str(setup / "runs"), "--out", str(out)]) == 0
    fig = np.array(Image.open(out))
    assert fig.shape == (16 + 2 + 2 * 34, 96 + 2 + 4 * 34, 3)
    recon = np.array(Image.open(runs["dpps"] / "recon" / "img1.png"))
    top, left = 16 + 2 + 34, 96 + 2 + 2 * 34  # second image row, third column
    assert np.array_equal(fig[top:top + 32, left:left + 32], recon)
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
