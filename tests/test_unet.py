"""The UNet: public state-dict layouts, golden outputs, timestep embedding, gradient checkpointing."""
from __future__ import annotations

import json
import math

import pytest
import torch

from guided_diffusion import TINY_FLAGS, create_model, timestep_embedding
from guided_diffusion.models import unet_kwargs

from conftest import CHECKPOINT_DIR, checkpoint_file

SPECS = ["ffhq_10m.spec.json", "imagenet256_uncond.spec.json"]
GOLDEN = sorted(p.name for p in CHECKPOINT_DIR.glob("golden_unet_*.pt")) or ["golden_unet_small.pt"]  # the DRUNet: test_drunet.py


@pytest.mark.parametrize("spec_name", SPECS)
def test_public_architecture_matches_spec(spec_name: str) -> None:
    spec = json.loads(checkpoint_file(spec_name).read_text())
    args = unet_kwargs(**spec["flags"])
    expected_args = dict(spec["unet_constructor_args"])
    for key in ("conv_resample", "dims"):  # fixed in our UNet (3x3 conv resampling, 2-D)
        expected_args.pop(key)
    assert sorted(args.pop("attention_resolutions")) == sorted(expected_args.pop("attention_resolutions"))
    assert args.pop("use_checkpoint") is False and args.pop("use_fp16") is False
    expected_args["channel_mult"] = tuple(expected_args["channel_mult"])
    expected_args["num_heads_upsample"] = args["num_heads_upsample"] if spec["flags"]["num_heads_upsample"] == -1 else expected_args["num_heads_upsample"]
    assert args == expected_args
    with torch.device("meta"):
        model = create_model(**spec["flags"])
    ours = [[name, list(t.shape), str(t.dtype).replace("torch.", "")] for name, t in model.state_dict().items()]
    assert ours == spec["state_dict"]  # names, shapes, dtypes and order
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]
    assert len(ours) == spec["num_tensors"]


def _golden_model(name: str):
    golden = torch.load(checkpoint_file(name), weights_only=True)
    model = create_model(**golden["flags"])
    model.load_state_dict(golden["state_dict"], strict=True)
    return model.eval(), golden


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_float64(name: str) -> None:
    model, golden = _golden_model(name)
    with torch.no_grad():
        out = model.double()(golden["x"].double(), golden["t"])
    assert out.dtype == torch.float64 and out.shape == golden["out"].shape
    assert (out - golden["out"]).abs().max().item() < 1e-8


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_float32(name: str) -> None:
    model, golden = _golden_model(name)
    with torch.no_grad():
        out = model(golden["x"], golden["t"])
    ref = golden["out_float32"]
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4


def test_attention_order_flag_changes_the_function() -> None:
    """The legacy/new QKV orders differ on the same weights (so the golden test pins the legacy one)."""
    model, golden = _golden_model("golden_unet_small.pt")
    flags = dict(golden["flags"], use_new_attention_order=True)
    other = create_model(**flags)
    other.load_state_dict(golden["state_dict"])
    with torch.no_grad():
        diff = (other.double()(golden["x"].double(), golden["t"]) - golden["out"]).abs().max().item()
    assert diff > 1e-3


def test_timestep_embedding_formula() -> None:
    t = torch.tensor([0, 7, 999])
    emb = timestep_embedding(t, 9, torch.float64)
    assert emb.shape == (3, 9)
    half = 4
    for row, tv in zip(emb, t.tolist()):
        freqs = [math.exp(-math.log(10000) * i / half) for i in range(half)]
        expected = [math.cos(tv * f) for f in freqs] + [math.sin(tv * f) for f in freqs] + [0.0]
        assert torch.allclose(row, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_gradient_checkpointing_matches_plain_backward() -> None:
    """use_checkpoint recomputes blocks but gives the same output and d out / d x with frozen weights."""
    torch.manual_seed(0)
    plain = create_model(**TINY_FLAGS).double()
    for p in plain.parameters():  # the zero-initialised layers would hide errors
        p.data.normal_(0, 0.05)
    ckpt = create_model(**dict(TINY_FLAGS, use_checkpoint=True)).double()
    ckpt.load_state_dict(plain.state_dict())
    for m in (plain, ckpt):
        m.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 500])
    grads = []
    for m in (plain, ckpt):
        xi = x.clone().requires_grad_(True)
        out = m(xi, t)
        (out ** 2).sum().backward()
        grads.append((out.detach(), xi.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert grads[0][1].abs().max() > 0
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)


def test_class_conditional_needs_labels() -> None:
    model = create_model(**dict(TINY_FLAGS, class_cond=True))
    x, t = torch.zeros(1, 3, 32, 32), torch.tensor([5])
    assert model(x, t, y=torch.tensor([3])).shape == (1, 6, 32, 32)
    with pytest.raises(ValueError, match="class labels"):
        model(x, t)


def test_bad_flags_are_reported() -> None:
    with pytest.raises(TypeError, match="unknown model flag"):
        create_model(image_sise=32)
    with pytest.raises(ValueError, match="channel_mult"):
        create_model(image_size=48)
