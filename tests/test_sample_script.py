"""End to end on the tiny random ADM: samplers through the registry, scripts/sample.py, configs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from configs import ConfigError, load_config
from guided_diffusion import TINY_FLAGS, create_model
from samplers import build_sampler, list_samplers

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,params", [("ddpm", {"steps": 5}), ("ddim", {"steps": 5, "eta": 0.5})])
def test_tiny_model_sampling_is_reproducible(name: str, params: dict) -> None:
    torch.manual_seed(0)
    model = create_model(**TINY_FLAGS).eval()
    sampler = build_sampler(name, **params)
    assert sampler.diffusion.num_timesteps == 5
    runs = [sampler.sample(model, shape=(2, 3, 32, 32), generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0].shape == (2, 3, 32, 32) and torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
    other = sampler.sample(model, shape=(2, 3, 32, 32), generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other)


def test_sampler_registry_errors() -> None:
    assert {"ddpm", "ddim"} <= set(list_samplers())
    with pytest.raises(ValueError, match="did you mean 'ddim'"):
        build_sampler("ddimm")
    with pytest.raises(ValueError, match="steps must be in"):
        build_sampler("ddpm", steps=2000)
    with pytest.raises(ValueError, match="torch.Generator"):
        build_sampler("ddpm", steps=2).sample(lambda x, t: x, shape=(1, 3, 4, 4))


def _write_config(tmp_path: Path, checkpoint: Path, **extra) -> Path:
    cfg = {"model": {"checkpoint": str(checkpoint)}, "sampler": {"name": "ddim", "steps": 3},
           "num_samples": 3, "batch_size": 2, "seed": 1, "output": str(tmp_path / "out"), **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sample.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_sample_script_writes_then_resumes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cfg = _write_config(tmp_path, tiny_checkpoint)
    first = _run("--config", str(cfg))
    assert first.returncode == 0, first.stderr
    files = sorted((tmp_path / "out" / "samples").glob("*.png"))
    assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
    assert (tmp_path / "out" / "grid.png").exists()
    stamps = [f.stat().st_mtime_ns for f in files]
    second = _run("--config", str(cfg))
    assert second.returncode == 0 and "wrote 0 image(s)" in second.stdout
    assert [f.stat().st_mtime_ns for f in files] == stamps
    changed = _run("--config", str(cfg), "--set", "seed=2")
    assert changed.returncode == 2 and "made with seed = 1, not 2" in changed.stderr


def test_sample_script_reports_config_errors_in_one_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cases = [
        (["--set", "num_sample=3"], "unknown key 'num_sample' (did you mean 'num_samples'?)"),
        (["--set", "batch_size=two"], "'batch_size' must be int"),
        (["--set", "sampler.name=ddpn"], "did you mean 'ddpm'"),
        (["--set", "sampler.stepz=3"], "stepz"),
        (["--set", "model.checkpoint=nowhere/ffhq_10m.pt"], "drive.google.com"),
        (["--set", "model.precision=fp8"], "'model.precision' must be one of fp32, fp16, bf16"),
    ]
    cfg = _write_config(tmp_path, tiny_checkpoint)
    for extra, message in cases:
        result = _run("--config", str(cfg), *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert message in result.stderr, (extra, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.count(str(cfg)) == 1, result.stderr  # the file named once


def test_load_config_types_and_missing_file(tmp_path: Path) -> None:
    assert load_config(None)["sampler"] == {"name": "ddpm"}
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: 1\n")
    with pytest.raises(ConfigError, match="'grid' must be bool"):
        load_config(str(bad))
    bad.write_text("seed: true\n")
    with pytest.raises(ConfigError, match="'seed' must be int"):
        load_config(str(bad))


def _images(folder: Path, n: int = 3) -> Path:
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):  # 40x48: not the model's 32x32, so the crop policy is exercised
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(folder / f"img{k}.png")
    return folder


@pytest.mark.parametrize("sampler", ["dps", "dpps"])
def test_restoration_end_to_end_and_batch_invariance(tmp_path: Path, tiny_checkpoint: Path, sampler: str) -> None:
    images = _images(tmp_path / "images")
    outs = {}
    for bs in (1, 2):
        cfg = {"model": {"checkpoint": str(tiny_checkpoint)},
               "sampler": {"name": sampler, "scale": 0.3, "steps": 3},
               "task": {"operator": {"name": "super_resolution", "scale_factor": 2},
                        "noise": {"name": "gaussian", "sigma": 0.05}},
               "data": {"input": str(images)}, "batch_size": bs, "seed": 3, "output": str(tmp_path / f"out{bs}")}
        path = tmp_path / f"cfg{bs}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = _run("--config", str(path))
        assert result.returncode == 0, result.stderr
        outs[bs] = tmp_path / f"out{bs}"
        for sub, size in (("label", (32, 32)), ("recon", (32, 32)), ("input", (16, 16))):
            files = sorted((outs[bs] / sub).glob("*.png"))
            assert [f.name for f in files] == ["img0.png", "img1.png", "img2.png"]
            from PIL import Image
            assert Image.open(files[0]).size == size
    # comparison.png: a titled row (measurement | bicubic baseline | restoration | truth) per image,
    # 32 px tiles, 2 px padding; the baseline is the classical restoration of the same y.
    from evaluation.figures import HEADER, LEFT
    from PIL import Image
    assert Image.open(outs[1] / "comparison.png").size == (LEFT + 4 * 34 + 2, HEADER + 3 * 34 + 2)
    assert sorted(p.name for p in (outs[1] / "baseline").glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    # Per-image generators: the batch size does not change any output byte.
    for name in ("img0.png", "img1.png", "img2.png"):
        assert (outs[1] / "recon" / name).read_bytes() == (outs[2] / "recon" / name).read_bytes()
    again = _run("--config", str(tmp_path / "cfg2.yaml"))
    assert again.returncode == 0 and "wrote 0 image(s)" in again.stdout


def test_bad_files_and_divergence_are_reported_and_the_run_goes_on(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = _images(tmp_path / "images", n=2)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    cfg = {"model": {"checkpoint": str(tiny_checkpoint)}, "sampler": {"name": "dps", "scale": 0.3, "steps": 2},
           "task": {"operator": {"name": "inpainting", "mask_type": "random", "image_size": 32}},
           "data": {"input": str(images)}, "batch_size": 3, "output": str(tmp_path / "out")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = _run("--config", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "recon").iterdir()) == ["img0.png", "img1.png"]
    assert "1 image(s) failed" in result.stderr and "broken.png: skipped, cannot use the file" in result.stderr
    # A step size that overflows: every image stops with the sampler, the step and the cause named.
    diverged = _run("--config", str(path), "--set", "sampler.scale=1e38", "--set", f"output={tmp_path / 'out2'}")
    assert diverged.returncode == 1 and "Traceback" not in diverged.stderr
    assert "img0.png: dps: non-finite values at step index" in diverged.stderr
    assert not (tmp_path / "out2" / "recon").exists()


def test_operator_that_cannot_fit_the_model_is_refused_before_work(tmp_path: Path, tiny_checkpoint: Path) -> None:
    images = _images(tmp_path / "images", n=1)
    cfg = _write_config(tmp_path, tiny_checkpoint, task={"operator": {"name": "inpainting", "mask_type": "box",
                                                                     "box_size": 8, "margin": 4, "image_size": 64}},
                        data={"input": str(images)})
    result = _run("--config", str(cfg))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: {cfg}: task.operator 'inpainting' cannot act on the model's 32x32")
    assert not (tmp_path / "out").exists()
    negative = _run("--config", str(cfg), "--set", "task.operator.image_size=32",
                    "--set", "task.noise={name: gaussian, sigma: -0.1}")
    assert negative.returncode == 2 and "task.noise: sigma must be a number >= 0, got -0.1" in negative.stderr
