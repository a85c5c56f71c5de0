"""ModelRunner options: exact in fp32, close in bf16/fp16, checkpointing and layout change nothing."""
from __future__ import annotations

import pytest
import torch

from guided_diffusion import TINY_FLAGS, create_model, load_model
from guided_diffusion.runtime import ModelRunner, set_checkpointing

from conftest import REPO, checkpoint_file


@pytest.fixture(scope="module")
def golden():
    return torch.load(checkpoint_file("golden_unet_small.pt"), weights_only=True)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("options,tol", [
    ({}, 1e-4),                                   # the golden float32 criterion
    ({"channels_last": True}, 1e-4),
    ({"sdpa": "math"}, 1e-4),
    ({"precision": "fp16"}, 1e-2),                # measured 1.7e-3
    ({"precision": "bf16"}, 5e-2),                # measured 1.5e-2 (8-bit mantissa)
])
def test_runner_reproduces_golden(golden, options: dict, tol: float) -> None:
    model = load_model(REPO / "model_zoo" / "golden_unet_small.pt")
    runner = ModelRunner(model, **options)
    with torch.no_grad():
        out = runner(golden["x"], golden["t"])
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert _rel(out, golden["out_float32"]) < tol


def test_reduced_precision_really_changes_the_arithmetic(golden) -> None:
    """Guards against an autocast that silently does nothing (then bf16 would equal fp32)."""
    model = load_model(REPO / "model_zoo" / "golden_unet_small.pt")
    with torch.no_grad():
        out = ModelRunner(model, precision="bf16")(golden["x"], golden["t"])
    assert _rel(out, golden["out_float32"]) > 1e-4


def test_set_checkpointing_keeps_input_gradients() -> None:
    torch.manual_seed(0)
    model = create_model(**TINY_FLAGS).double().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 900])
    grads = []
    for enabled in (False, True):
        assert set_checkpointing(model, enabled) == 14  # TINY_FLAGS: 10 residual + 4 attention blocks
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ModelRunner(model)(xi, t).square().sum(), xi)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_bad_options_are_refused() -> None:
    model = create_model(**TINY_FLAGS)
    with pytest.raises(ValueError, match="precision"):
        ModelRunner(model, precision="fp8")
    with pytest.raises(ValueError, match="sdpa"):
        ModelRunner(model, sdpa="fastest")


def test_fp32_turns_tf32_off() -> None:
    """PyTorch lets cuDNN use TF32 by default, which moves golden replays on a GPU by up to 4e-2:
    an fp32 runner turns it off for the process; reduced precision leaves the flags alone."""
    model = torch.nn.Conv2d(3, 3, 1)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    ModelRunner(model, precision="bf16")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    ModelRunner(model, precision="fp32")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
