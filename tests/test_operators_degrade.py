"""scripts/degrade.py end to end on a tiny folder, the overwrite guard, and the grid."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from operators import load_operator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "degrade.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{name}.png")
    return images


def write_config(tmp_path: Path, images: Path, operator: dict, noise: dict) -> Path:
    cfg = {"operator": operator, "noise": noise, "input": str(images), "output": str(tmp_path / "out"), "seed": 5}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_degrade_end_to_end(tmp_path: Path, folder: Path) -> None:
    """Labels are the inputs, measurement = A x + noise (seed + index), PNG = clamp((y+1)/2)."""
    op_cfg = {"name": "inpainting", "mask_type": "random", "image_size": 32, "seed": 1}
    cfg = write_config(tmp_path, folder, op_cfg, {"name": "gaussian", "sigma": 0.05})
    result = run("--config", str(cfg))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "label").iterdir()) == ["a.png", "b.png"]
    assert np.array_equal(np.asarray(Image.open(out / "label" / "a.png")), np.asarray(Image.open(folder / "a.png")))
    op = load_operator(out / "operator.pt")
    pixels = np.asarray(Image.open(folder / "b.png"), dtype=np.float32) / 255
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1
    noise = 0.05 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5 + 1))
    y = np.load(out / "measurement" / "b.npy")
    assert np.allclose(y, (op(x) + noise)[0].numpy(), atol=1e-6)
    png = np.asarray(Image.open(out / "input" / "b.png"), dtype=np.float64) / 255
    assert np.abs(png - np.clip((y.transpose(1, 2, 0) + 1) / 2, 0, 1)).max() <= 0.5 / 255 + 1e-6
    assert yaml.safe_load((out / "config.yaml").read_text())["operator"] == op_cfg


def test_refuses_foreign_folders_and_replaces_only_its_own_run(tmp_path: Path, folder: Path) -> None:
    cfg = write_config(tmp_path, folder, {"name": "colorization"}, {"name": "clean"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user file")
    for extra in ([], ["--overwrite"]):  # a folder the tool did not make is never used, even with --overwrite
        refused = run("--config", str(cfg), *extra)
        assert refused.returncode == 2 and "not empty and holds no run of this tool" in refused.stderr
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    (tmp_path / "out" / "keep.txt").unlink()
    assert run("--config", str(cfg)).returncode == 0
    again = run("--config", str(cfg))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    (tmp_path / "out" / "notes.txt").write_text("a user's file inside the run folder")
    allowed = run("--config", str(cfg), "--overwrite")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "a user's file inside the run folder"
    gray = Image.open(tmp_path / "out" / "input" / "a.png")
    assert gray.mode == "L" and gray.size == (32, 32)


def test_phase_retrieval_saves_visualisation_and_magnitudes(tmp_path: Path, folder: Path) -> None:
    cfg = write_config(tmp_path, folder, {"name": "phase_retrieval"}, {"name": "clean"})
    assert run("--config", str(cfg)).returncode == 0
    assert np.load(tmp_path / "out" / "measurement" / "a.npy").shape == (3, 48, 48)
    assert Image.open(tmp_path / "out" / "input" / "a.png").size == (48, 48)


def test_grid(tmp_path: Path, folder: Path) -> None:
    """One tile for the ground truth plus one per config, 4 columns of 64-px tiles here."""
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, op in (("sr", {"name": "super_resolution", "scale_factor": 2}), ("color", {"name": "colorization"})):
        (configs / f"{name}.yaml").write_text(yaml.safe_dump({"operator": op, "noise": {"name": "clean"}}))
    spec = importlib.util.spec_from_file_location("degrade", SCRIPT)
    degrade = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(degrade)
    out = degrade.operator_grid(tmp_path / "grid.png", sorted(configs.glob("*.yaml")), folder / "a.png", tile=64)
    assert Image.open(out).size == (4 * 64, 64)
