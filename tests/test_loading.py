"""load_model: strict loads, flags from the file or the public table, clear errors, no pickled code."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from guided_diffusion import TINY_FLAGS, CheckpointError, load_model

from conftest import checkpoint_file


@pytest.fixture
def golden():
    return torch.load(checkpoint_file("golden_unet_small.pt"), weights_only=True)


def test_project_checkpoint_with_flags_reproduces_golden(golden, tmp_path: Path) -> None:
    path = tmp_path / "small.pt"
    torch.save({"flags": golden["flags"], "state_dict": golden["state_dict"]}, path)
    model = load_model(path, dtype=torch.float64)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model(golden["x"].double(), golden["t"])
    assert (out - golden["out"]).abs().max().item() < 1e-8


def test_raw_state_dict_needs_flags(golden, tmp_path: Path) -> None:
    path = tmp_path / "raw.pt"
    torch.save(golden["state_dict"], path)
    with pytest.raises(CheckpointError, match="pass the flags"):
        load_model(path)
    model = load_model(path, **golden["flags"])
    with torch.no_grad():
        out = model(golden["x"], golden["t"])
    assert ((out - golden["out_float32"]).abs().max() / golden["out_float32"].abs().max()).item() < 1e-4


def test_half_precision_file_is_cast_to_model_dtype(golden, tmp_path: Path) -> None:
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in golden["state_dict"].items()}, path)
    model = load_model(path, **golden["flags"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref = golden["state_dict"]["out.2.weight"]
    assert torch.equal(model.state_dict()["out.2.weight"], ref.half().float())


def test_mismatch_lists_missing_unexpected_and_shapes(golden, tmp_path: Path) -> None:
    sd = dict(golden["state_dict"])
    del sd["out.2.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["time_embed.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, **golden["flags"])
    msg = str(err.value)
    assert "missing keys (1): out.2.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "time_embed.0.weight: checkpoint (3, 3) vs model (128, 32)" in msg


def test_wrong_architecture_is_refused(golden, tmp_path: Path) -> None:
    path = tmp_path / "small.pt"
    torch.save(golden["state_dict"], path)
    with pytest.raises(CheckpointError, match="does not match the model architecture"):
        load_model(path, **TINY_FLAGS)


def test_missing_public_checkpoint_says_where_to_download(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "ffhq_10m.pt")
    assert str(tmp_path / "ffhq_10m.pt") in str(err.value)
    assert "drive.google.com" in str(err.value)
    with pytest.raises(CheckpointError, match="openaipublic.blob.core.windows.net"):
        load_model(tmp_path / "256x256_diffusion_uncond.pt")


class _Payload:
    """Unpickling this would create a file: a stand-in for code hidden in a downloaded .pt."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_pickled_code_never_runs(container: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": _Payload(str(marker))}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path, **TINY_FLAGS)
    assert not marker.exists()


def test_truncated_file_is_reported(golden, tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save(golden["state_dict"], path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_model(path, **golden["flags"])
    assert os.path.getsize(path) < len(data)
