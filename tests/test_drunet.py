"""DRUNet (DPIR's denoiser): the golden checkpoint's stored outputs, the released layout, and how
`load_model` recognises, loads and refuses DRUNet files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import checkpoint_file
from guided_diffusion import PUBLIC_DRUNETS, CheckpointError, DRUNet, load_model
from guided_diffusion.drunet import drunet_kwargs, is_drunet_layout

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def golden():
    return torch.load(checkpoint_file("golden_drunet_small.pt"), weights_only=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_golden_outputs_float64_and_float32(golden) -> None:
    """The official module after .double() (`out`): measured bit-identical (bound 1e-12); float32
    against the official float32 run: measured 5.6e-7 relative (convolution algorithms), bound 1e-5."""
    model = load_model(checkpoint_file("golden_drunet_small.pt"), dtype=torch.float64)
    assert isinstance(model, DRUNet) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == golden["num_params"]
    with torch.no_grad():
        assert (model(golden["x"].double()) - golden["out"]).abs().max().item() < 1e-12
        model32 = load_model(checkpoint_file("golden_drunet_small.pt"))
        assert rel(model32(golden["x"]), golden["out_float32"]) < 1e-5


def test_sigma_argument_appends_the_noise_map(golden) -> None:
    """model(image, sigma) is model(cat(image, sigma map)); the map matters (49/255 vs 7.65/255
    in the two test images: swapping them changes the output by more than 0.01)."""
    model = load_model(checkpoint_file("golden_drunet_small.pt"), dtype=torch.float64)
    x = golden["x"].double()
    levels = x[:, 3, 0, 0]
    with torch.no_grad():
        assert torch.equal(model(x[:, :3], levels), model(x))
        assert (model(x[:, :3], levels.flip(0)) - model(x)).abs().max().item() > 1e-2
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 4, 20, 24, dtype=torch.float64))


def test_released_layout_matches_the_spec() -> None:
    """drunet_color.pth's layout (names, shapes, order; 32,640,960 parameters) is what DRUNet
    builds with the kwargs recorded for it, and reading the kwargs off the shapes gives them back."""
    spec = json.loads(checkpoint_file("drunet_color.spec.json").read_text())
    with torch.device("meta"):
        model = DRUNet(**spec["kwargs"])
    layout = [[k, list(v.shape), "float32"] for k, v in model.state_dict().items()]
    assert layout == spec["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"] == 32_640_960
    assert drunet_kwargs(model.state_dict()) == {**spec["kwargs"], "nc": list(spec["kwargs"]["nc"])}
    assert PUBLIC_DRUNETS["drunet_color"].kwargs == spec["kwargs"]
    url = "https://github.com/cszn/KAIR/releases/download/v1.0/drunet_color.pth"
    assert url in spec["notes"] and url in PUBLIC_DRUNETS["drunet_color"].url


def test_plain_state_dicts_are_recognised_by_layout(golden, tmp_path: Path) -> None:
    """A released-style plain state dict (no kwargs) is built from its shapes: the golden weights
    saved alone give the golden outputs; a gray layout (in_nc 2, out_nc 1) loads as well."""
    path = tmp_path / "drunet_small.pth"
    torch.save(golden["state_dict"], path)
    model = load_model(path, dtype=torch.float64)
    assert model.kwargs == golden["kwargs"]
    with torch.no_grad():
        assert (model(golden["x"].double()) - golden["out"]).abs().max().item() < 1e-12
    gray = DRUNet(in_nc=2, out_nc=1, nc=(8, 16, 16, 32), nb=1)
    torch.save(gray.state_dict(), tmp_path / "gray.pth")
    loaded = load_model(tmp_path / "gray.pth", image_size=64)
    assert (loaded.in_channels, loaded.out_channels, loaded.image_size) == (1, 1, 64)
    assert is_drunet_layout(gray.state_dict()) and not is_drunet_layout({"time_embed.0.weight": 0})


def test_refusals(golden, tmp_path: Path) -> None:
    """Neither layout: one line naming both; a DRUNet file with ADM flags; a damaged DRUNet
    layout lists its mismatches; a missing public file names its download address."""
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2), "decoder.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert "matches neither the ADM UNet" in str(err.value) and "\n" not in str(err.value)
    sd = dict(golden["state_dict"])
    torch.save(sd, tmp_path / "d.pth")
    with pytest.raises(CheckpointError, match="ADM flags num_channels do not apply"):
        load_model(tmp_path / "d.pth", num_channels=64)
    del sd["m_up1.2.res.2.weight"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): m_up1.2.res.2.weight"):
        load_model(tmp_path / "cut.pth")
    for name in ("drunet_color.pth", "drunet_gray.pth"):
        with pytest.raises(CheckpointError) as err:
            load_model(tmp_path / name)
        assert "checkpoint not found" in str(err.value)
        assert f"github.com/cszn/KAIR/releases/download/v1.0/{name}" in str(err.value)


def test_a_baseline_run_reads_the_image_size_from_model_flags(tmp_path) -> None:
    """DRUNet files store no image size: a run's `model.flags.image_size` sets it, for the
    restoration and for its classical baseline alike (32x32 images cropped to 16x16)."""
    from test_run_folders import make_images, restore_config, write

    from configs import load_config
    from runs.baseline import run as baseline_run

    images = make_images(tmp_path / "images", n=1)
    cfg = restore_config(checkpoint_file("golden_drunet_small.pt"), images, tmp_path / "out",
                         model__flags={"image_size": 16}, data__resize="center_crop")
    report = baseline_run(load_config(write(tmp_path / "cfg.yaml", cfg)))
    (recon,) = (report.folder / "recon").glob("*.png")
    assert Image.open(recon).size == (16, 16)
