"""Image files in every common form load as documented (3, H, W) tensors in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from guided_diffusion.image_io import list_images, load_image, save_image


def test_round_trip_is_exact_for_8bit(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    save_image(x, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), arr)


def test_modes_become_rgb(tmp_path: Path) -> None:
    gray = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, colour kept
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "pal.png")
    sixteen = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    g = load_image(tmp_path / "gray.png")
    assert torch.equal(g[0], g[1]) and torch.equal(g[0], g[2])
    assert g[0, 0, 1].item() == pytest.approx(128 / 127.5 - 1, abs=1e-6)
    assert load_image(tmp_path / "rgba.png")[0, 0, 0].item() == pytest.approx(200 / 127.5 - 1, abs=1e-6)
    assert torch.allclose(load_image(tmp_path / "pal.png"), g)
    s = load_image(tmp_path / "16.png")
    assert s[0, 0, 1].item() == pytest.approx(1.0) and s[0, 1, 0].item() == pytest.approx(32768 / 65535 * 2 - 1, abs=1e-6)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((2, 4, 3), dtype=np.uint8)
    arr[0, 0] = 255  # a white top-left pixel in a 4-wide, 2-high image
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    x = load_image(tmp_path / "rot.jpg")
    assert x.shape == (3, 4, 2)  # displayed upright: 2 wide, 4 high
    assert x[:, 0, 1].mean() > 0.5 and x[:, 0, 0].mean() < 0  # white pixel now at the top right


def test_size_policies(tmp_path: Path) -> None:
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 20:60] = 255  # the central half is white
    Image.fromarray(arr).save(tmp_path / "wide.png")
    crop = load_image(tmp_path / "wide.png", size=32, policy="center_crop")
    assert crop.shape == (3, 32, 32) and crop.min() > 0.9  # the centre crop is all white
    squeezed = load_image(tmp_path / "wide.png", size=32, policy="resize")
    assert squeezed.shape == (3, 32, 32) and squeezed[:, :, 0].max() < -0.9
    with pytest.raises(ValueError, match="80x40, the model needs 32x32"):
        load_image(tmp_path / "wide.png", size=32, policy="error")


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(OSError):
        load_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        list_images(tmp_path / "empty")


def test_huge_image_is_refused_as_unreadable(tmp_path: Path, monkeypatch) -> None:
    """Above twice PIL's pixel limit a file is refused with an OSError (lowered limit for speed)."""
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x 1000
    with pytest.raises(OSError, match="refused as too large"):
        load_image(tmp_path / "big.png")


def test_images_by_stem_refuses_shared_stems(tmp_path: Path) -> None:
    """Outputs are named by stem, so a.png beside sub/a.jpg would overwrite each other: refused."""
    from guided_diffusion.image_io import images_by_stem

    (tmp_path / "sub").mkdir()
    img = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    img.save(tmp_path / "b.png")
    img.save(tmp_path / "a.png")
    assert list(images_by_stem(tmp_path)) == ["a", "b"]
    img.save(tmp_path / "sub" / "a.jpg")
    with pytest.raises(ValueError, match="two images share the stem 'a'"):
        images_by_stem(tmp_path)
