"""Any size from a YAML config: `data.resize: keep` restores every image at its own size on patches
of the model's size, and baseline.py / evaluate.py / degrade.py take the same images."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import yaml
from PIL import Image

from scripts.baseline import main as baseline_main
from scripts.evaluate import main as evaluate_main
from scripts.sample import main as sample_main


def _photos(folder: Path, sizes: Dict[str, tuple]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    return folder


def _config(tmp_path: Path, checkpoint: Path, images: Path, **extra) -> Path:
    cfg = {"model": {"checkpoint": str(checkpoint)},
           "sampler": {"name": "diffpir", "steps": 2, "zeta": 1.0, "patch_size": 32, "patch_stride": 16},
           "task": {"operator": {"name": "super_resolution", "scale_factor": 2, "mode": "bicubic"}},
           "data": {"input": str(images), "resize": "keep"}, "batch_size": 2, "output": str(tmp_path / "out")}
    for key, value in extra.items():
        cfg[key] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_keep_restores_each_image_at_its_own_size(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    images = _photos(tmp_path / "images", {"tall": (56, 40), "wide": (40, 72)})
    cfg = _config(tmp_path, tiny_checkpoint, images)
    assert sample_main(["--config", str(cfg)]) == 0, capsys.readouterr().err
    for stem, size in (("tall", (40, 56)), ("wide", (72, 40))):  # PIL sizes are (width, height)
        assert Image.open(tmp_path / "out" / "recon" / f"{stem}.png").size == size
        assert Image.open(tmp_path / "out" / "input" / f"{stem}.png").size == (size[0] // 2, size[1] // 2)
        # The ground truth is the photograph itself, not a crop or a resize of it.
        assert (tmp_path / "out" / "label" / f"{stem}.png").read_bytes() == (images / f"{stem}.png").read_bytes()
    assert baseline_main(["--config", str(cfg)]) == 0
    assert Image.open(tmp_path / "out_bicubic" / "recon" / "wide.png").size == (72, 40)
    assert evaluate_main(["--recon", str(tmp_path / "out" / "recon"), "--label", str(tmp_path / "out" / "label"),
                          "--metrics", "psnr,ssim"]) == 0


def test_keep_without_patches_and_too_small_images_are_refused(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    images = _photos(tmp_path / "images", {"small": (24, 40), "fine": (32, 48)})
    cfg = _config(tmp_path, tiny_checkpoint, images)
    no_patches = ["--set", "sampler={name: diffpir, steps: 2}"]
    assert sample_main(["--config", str(cfg), *no_patches]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.resize: keep" in err[0] and "sampler.patch_size" in err[0]
    assert not (tmp_path / "out").exists()
    assert sample_main(["--config", str(cfg)]) == 1  # the run goes on without the image it cannot patch
    err = capsys.readouterr().err
    assert "small.png: skipped: the image is 40x24, smaller than sampler.patch_size 32" in err
    assert Image.open(tmp_path / "out" / "recon" / "fine.png").size == (48, 32)


def test_refusal_of_another_size_names_keep(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    images = _photos(tmp_path / "images", {"wide": (32, 48)})
    cfg = _config(tmp_path, tiny_checkpoint, images, data={"input": str(images), "resize": "error"})
    assert sample_main(["--config", str(cfg)]) == 1
    assert "set data.resize to center_crop or resize, or to keep with sampler.patch_size" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["low_light", "hdr"])
def test_exposure_models_refuse_images_of_another_size(tmp_path: Path, tiny_checkpoint: Path, name: str,
                                                       capsys) -> None:
    """A 400x600 low-light (1060x1900 HDR) parameter map is not a 32x32 task: refused before any work
    instead of silently treating the image as a patch of the map."""
    images = _photos(tmp_path / "images", {"a": (32, 32)})
    cfg = _config(tmp_path, tiny_checkpoint, images, data={"input": str(images), "resize": "error"},
                  sampler={"name": "gdp", "steps": 2, "scale": 100.0},
                  task={"operator": {"name": name}})
    assert sample_main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the image is 32x32 but this exposure model's map is" in err[0]


@pytest.mark.parametrize("sampler,operator,message", [
    ({"name": "gdp", "steps": 2, "patch_size": 32, "patch_stride": 16},
     {"name": "super_resolution", "scale_factor": 2}, "set sampler.patch_rule: merged"),
    ({"name": "diffpir", "steps": 2}, {"name": "phase_retrieval"}, "is nonlinear (use dps or dpps)"),
])
def test_a_sampler_that_cannot_take_the_operator_is_refused_before_work(tmp_path: Path, tiny_checkpoint: Path,
                                                                      sampler: dict, operator: dict, message: str,
                                                                      capsys) -> None:
    images = _photos(tmp_path / "images", {"a": (32, 32)})
    cfg = _config(tmp_path, tiny_checkpoint, images, sampler=sampler, task={"operator": operator})
    assert sample_main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("error: ")
    assert not (tmp_path / "out").exists()
