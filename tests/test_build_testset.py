"""data/build_testset.py: index lists, the ImageNet size rule, centre-crop output, resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.build_testset import TESTSETS, build, index_source, main, select


def _image(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_index_lists() -> None:
    ffhq_1k, n, _ = TESTSETS["ffhq_1k"]
    assert ffhq_1k()[:2] == ["00000", "00001"] and ffhq_1k()[-1] == "00999" and n == 1000
    val_100 = TESTSETS["diffpir_ffhq_val_100"][0]()
    assert len(val_100) == 100 and val_100[:2] == ["69007", "69017"] and val_100[-1] == "69997"
    assert TESTSETS["imagenet_1k"][0]()[0] == "ILSVRC2012_val_00000001"


def test_imagenet_rule_skips_small_images_in_number_order(tmp_path: Path) -> None:
    sizes = {1: (300, 260), 2: (500, 200), 3: (256, 256), 5: (400, 300)}
    for k, (w, h) in sizes.items():
        _image(tmp_path / "n01" / f"ILSVRC2012_val_{k:08d}.JPEG", w, h, k)
    files = index_source(tmp_path)
    pool = TESTSETS["imagenet_1k"][0]()
    assert select(pool, files, 3, True) == [f"ILSVRC2012_val_{k:08d}" for k in (1, 3, 5)]
    with pytest.raises(FileNotFoundError, match="only 3 images of at least 256 px"):
        select(pool, files, 4, True)
    with pytest.raises(FileNotFoundError, match="2 of 3 images are not under the source"):
        select(["ILSVRC2012_val_00000001", "a", "b"], files, 3, False)


def test_build_crops_to_256_resumes_and_refuses_another_set(tmp_path: Path, capsys) -> None:
    for k in (69007, 69017):
        _image(tmp_path / "src" / "69000" / f"{k}.png", 320, 280, k)
    (tmp_path / "list.txt").write_text("69007.png\n69017.png\n")
    out = tmp_path / "out"
    assert main(["--source", str(tmp_path / "src"), "--list", str(tmp_path / "list.txt"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["69007.png", "69017.png"]
    assert Image.open(out / "69007.png").size == (256, 256)
    assert "2 images (2 written now)" in capsys.readouterr().out
    assert main(["--source", str(tmp_path / "src"), "--list", str(tmp_path / "list.txt"), "--out", str(out)]) == 0
    assert "(0 written now)" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="holds another test set"):
        build(["69007"], index_source(tmp_path / "src"), out)
    assert main(["--source", str(tmp_path / "src"), "--testset", "ffhq_1k", "--out", str(tmp_path / "o2")]) == 2
    assert "1000 of 1000 images are not under the source" in capsys.readouterr().err
