"""Build the ADM UNet from guided-diffusion's flag names and load checkpoints strictly and safely."""
from __future__ import annotations

import difflib
import math
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from .drunet import PUBLIC_DRUNETS, DRUNet, drunet_kwargs, is_drunet_layout
from .unet import UNetModel

# guided-diffusion's `model_and_diffusion_defaults()` for the model flags.
MODEL_DEFAULTS: Dict[str, Any] = dict(
    image_size=64, num_channels=128, num_res_blocks=2, channel_mult="", learn_sigma=False,
    class_cond=False, use_checkpoint=False, attention_resolutions="16,8", num_heads=4,
    num_head_channels=-1, num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
    resblock_updown=False, use_fp16=False, use_new_attention_order=False,
)

# Per-image-size channel multipliers used when `channel_mult` is "".
DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}

NUM_CLASSES = 1000


@dataclass(frozen=True)
class PublicCheckpoint:
    """A public checkpoint: its file name, where users download it, and its architecture flags."""

    filename: str
    url: str
    flags: Dict[str, Any] = field(default_factory=dict)


_PUBLIC_COMMON = dict(image_size=256, channel_mult="", learn_sigma=True, class_cond=False,
                      num_head_channels=64, use_scale_shift_norm=True, resblock_updown=True,
                      use_new_attention_order=False, dropout=0.0)

PUBLIC_CHECKPOINTS: Dict[str, PublicCheckpoint] = {
    "ffhq_10m": PublicCheckpoint(
        "ffhq_10m.pt",
        "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh (DPS README; "
        "DiffPIR's download.sh fetches the same file by Drive id 1BGwhRWUoguF-D8wlZ65tf227gp3cDUDh)",
        dict(_PUBLIC_COMMON, num_channels=128, num_res_blocks=1, attention_resolutions="16")),
    "imagenet256_uncond": PublicCheckpoint(
        "256x256_diffusion_uncond.pt",
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
        dict(_PUBLIC_COMMON, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8")),
}

# A tiny ADM configuration exercising every code path (scale-shift, resblock up/down, attention,
# learned sigma); it builds and runs in milliseconds for end-to-end tests.
TINY_FLAGS: Dict[str, Any] = dict(
    image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=True,
    attention_resolutions="16", num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unsafe, unreadable or does not match the architecture."""


def _parse_ints(value: Union[str, Sequence], name: str) -> List[float]:
    if isinstance(value, str):
        try:
            return [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated numbers, got {value!r}") from None
    return [float(v) for v in value]


# Smallest value of the integer flags; those in _FLAG_DERIVED may also be -1 (derived from the others).
_FLAG_MIN = {"image_size": 1, "num_channels": 1, "num_res_blocks": 1, "num_heads": 1, "num_head_channels": 1,
             "num_heads_upsample": 1}
_FLAG_DERIVED = {"num_head_channels", "num_heads_upsample"}


def check_model_flags(flags: Mapping[str, Any], prefix: str = "") -> None:
    """Check each given flag's name, type and range (not their combination: see `unet_kwargs`).

    Types follow `MODEL_DEFAULTS`: booleans, integers (>= 1; -1 also for num_head_channels and
    num_heads_upsample), dropout a number in [0, 1), channel_mult / attention_resolutions a
    comma-separated string or a list of positive numbers (empty: the size's default channel_mult,
    no attention). Raises TypeError for an unknown flag (with the nearest known name), ValueError
    for a bad value; both name the flag as `prefix + name`.
    """
    for name, value in flags.items():
        key = f"'{prefix}{name}'"
        if name not in MODEL_DEFAULTS:
            close = difflib.get_close_matches(str(name), list(MODEL_DEFAULTS), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise TypeError(f"unknown model flag {key}{hint}; known: {', '.join(sorted(MODEL_DEFAULTS))}")
        default, got = MODEL_DEFAULTS[name], f"got {type(value).__name__} {value!r}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, {got}")
        elif isinstance(default, int):
            # bool is a subclass of int: `num_channels: true` is not a number.
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an integer, {got}")
            if value < _FLAG_MIN[name] and not (name in _FLAG_DERIVED and value == -1):
                allowed = "-1 or >= 1" if name in _FLAG_DERIVED else f">= {_FLAG_MIN[name]}"
                raise ValueError(f"{key} must be {allowed}, got {value}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{key} must be a number in [0, 1), {got}")
        elif not (name == "channel_mult" and value is None):  # channel_mult "" / None: the size's default
            if not isinstance(value, (str, list, tuple)):
                raise ValueError(f"{key} must be a comma-separated string or a list of numbers, {got}")
            try:
                numbers = _parse_ints(value, key)
            except (TypeError, ValueError):
                numbers = [math.nan]
            if not all(math.isfinite(v) and v > 0 for v in numbers):
                raise ValueError(f"{key} must be comma-separated positive numbers, {got}")


def unet_kwargs(**flags: Any) -> Dict[str, Any]:
    """Map ADM `create_model` flags to `UNetModel` constructor arguments (defaults as guided-diffusion)."""
    check_model_flags(flags)
    f = {**MODEL_DEFAULTS, **flags}
    size = int(f["image_size"])
    if f["channel_mult"] in ("", None, ()):
        if size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {size}; pass channel_mult")
        mult = DEFAULT_CHANNEL_MULT[size]
    else:
        mult = tuple(m if m != int(m) else int(m) for m in _parse_ints(f["channel_mult"], "channel_mult"))
    # Flags give attention as feature-map sizes; the network wants downsampling factors.
    attention_ds = [size // int(r) for r in _parse_ints(f["attention_resolutions"], "attention_resolutions")]
    return dict(
        image_size=size, in_channels=3, model_channels=int(f["num_channels"]),
        out_channels=6 if f["learn_sigma"] else 3, num_res_blocks=int(f["num_res_blocks"]),
        attention_resolutions=attention_ds, dropout=float(f["dropout"]), channel_mult=mult,
        num_classes=NUM_CLASSES if f["class_cond"] else None, use_checkpoint=bool(f["use_checkpoint"]),
        use_fp16=bool(f["use_fp16"]), num_heads=int(f["num_heads"]),
        num_head_channels=int(f["num_head_channels"]), num_heads_upsample=int(f["num_heads_upsample"]),
        use_scale_shift_norm=bool(f["use_scale_shift_norm"]), resblock_updown=bool(f["resblock_updown"]),
        use_new_attention_order=bool(f["use_new_attention_order"]),
    )


def create_model(**flags: Any) -> UNetModel:
    """Build the ADM UNet from guided-diffusion flag names (see `MODEL_DEFAULTS`).

    Build on the meta device (`with torch.device("meta"): create_model(...)`) to inspect shapes
    without allocating memory.
    """
    return UNetModel(**unet_kwargs(**flags))


def _public_for(path: str) -> Optional[PublicCheckpoint]:
    name = os.path.basename(path)
    for ckpt in PUBLIC_CHECKPOINTS.values():
        # DiffPIR saves the FFHQ file as diffusion_ffhq_10m.pt.
        if name in (ckpt.filename, "diffusion_" + ckpt.filename):
            return ckpt
    return None


def _download_hint(path: str) -> str:
    name = os.path.basename(path)
    found = _public_for(path) or next((d for d in PUBLIC_DRUNETS.values() if d.filename == name), None)
    if found is not None:
        return f"download {found.filename} from {found.url}"
    known = "; ".join(f"{c.filename}: {c.url}" for c in PUBLIC_CHECKPOINTS.values())
    return f"the public checkpoints are {known}; DPIR's DRUNet: {', '.join(d.filename for d in PUBLIC_DRUNETS.values())}"


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint with `weights_only=True` (no pickled code ever runs).

    Returns a dict with `state_dict` and, for the project's own checkpoints, `flags` (ADM) or
    `kwargs` (DRUNet constructor arguments, as golden_drunet_small.pt stores them). A raw state
    dict (the public files) comes back as {"state_dict": ..., "flags": None, "kwargs": None}.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {os.path.abspath(path)}; {_download_hint(path)}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), an interrupted download?; {_download_hint(path)}")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic not in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):  # a zip archive or a pickle
        raise CheckpointError(f"cannot read {path} (not a torch checkpoint: it starts with {magic!r}, e.g. an "
                              f"HTML page saved by a download); {_download_hint(path)}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():  # a damaged pickle, not a refused one
            raise CheckpointError(f"cannot read {path} (truncated or not a torch checkpoint: {_first_line(err)}); "
                                  f"{_download_hint(path)}") from None
        raise CheckpointError(f"refused to load {path}: it is not a plain tensor checkpoint "
                              f"(weights_only=True rejected it: {_first_line(err)})") from None
    except Exception as err:  # torch.load fails on damaged files with many types (KeyError, IndexError, ...)
        # Ctrl-C / SIGTERM are no Exception (KeyboardInterrupt, SystemExit, runs.Interrupted): an
        # interrupted read ends as an interruption, never as "cannot read" (a good file re-downloaded).
        # Only RuntimeError / OSError texts say something to a user (a KeyError's is a stray byte).
        detail = f": {_first_line(err)}" if isinstance(err, (RuntimeError, OSError)) else ""
        raise CheckpointError(f"cannot read {path} (truncated or not a torch checkpoint{detail}); "
                              f"{_download_hint(path)}") from None
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict; {_download_hint(path)}")
    if "state_dict" in payload and isinstance(payload["state_dict"], Mapping):
        flags = payload.get("flags")
        if flags is not None and not isinstance(flags, Mapping):
            raise CheckpointError(f"{path}: its stored 'flags' is a {type(flags).__name__}, not a mapping of "
                                  f"model flags; re-export the model or save its state_dict alone and set model.flags")
        kwargs = payload.get("kwargs")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise CheckpointError(f"{path}: its stored 'kwargs' is a {type(kwargs).__name__}, not a mapping of "
                                  f"DRUNet constructor arguments")
        return {"state_dict": payload["state_dict"], "flags": None if flags is None else dict(flags),
                "kwargs": None if kwargs is None else dict(kwargs)}
    return {"state_dict": payload, "flags": None, "kwargs": None}


def _first_line(err: BaseException) -> str:
    """The first sentence of an error's first non-empty line, else its type (some errors have no text)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(err).__name__


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise `CheckpointError` listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return

    def show(title: str, items: List[str]) -> str:
        head = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
        return f"\n  {title} ({len(items)}): {head}"

    msg = f"{source} does not match the model architecture (check the model flags):"
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            msg += show(title, items)
    raise CheckpointError(msg)


# Keys that only the ADM UNet's state dict has (a file with neither these nor DRUNet's is refused).
_ADM_KEYS = ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight")


def load_model(path: str, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
               **flags: Any) -> Union[UNetModel, DRUNet]:
    """Build the network `path` holds and load it strictly; returns it in eval mode on `device`.

    ADM UNet: flags default to those stored in the file (the project's own checkpoints), then to
    the public checkpoint matching the file name (ffhq_10m.pt, 256x256_diffusion_uncond.pt);
    explicit flags override both. DRUNet (DPIR's denoiser, `guided_diffusion.drunet`), recognised
    by its layout: a plain state dict (the released drunet_color.pth / drunet_gray.pth, sizes read
    off the shapes) or {"state_dict", "kwargs"} (golden_drunet_small.pt); the only flag it takes is
    `image_size`, the size a run restores images at. Stored tensors of any float dtype are cast
    to `dtype`.
    """
    ckpt = read_checkpoint(path)
    if ckpt["kwargs"] is not None or (not ckpt["flags"] and is_drunet_layout(ckpt["state_dict"])):
        return _load_drunet(path, ckpt, device, dtype, flags)
    public = _public_for(path)
    base = ckpt["flags"] or (public.flags if public else {})
    if not base and not flags:
        if not any(k in ckpt["state_dict"] for k in _ADM_KEYS):
            keys = ", ".join(list(map(str, ckpt["state_dict"]))[:3]) or "none"
            raise CheckpointError(f"{path}: its layout matches neither the ADM UNet (time_embed.*, input_blocks.*) "
                                  f"nor DRUNet (m_head.*, m_down1.*, ...); its first keys: {keys}")
        raise CheckpointError(f"{path} stores no model flags and is not a known public checkpoint; pass the flags")
    try:
        model = create_model(**{**base, **flags})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build the network from its flags ({_first_line(err)}); "
                              f"check model.flags") from None
    check_state_dict(model, ckpt["state_dict"], source=os.fspath(path))
    use_fp16 = bool({**base, **flags}.get("use_fp16", False))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model = model.to(device=device, dtype=dtype)
    if use_fp16:
        model.convert_to_fp16()
    return model.eval().requires_grad_(False)


def _load_drunet(path: str, ckpt: Dict[str, Any], device: Union[str, torch.device], dtype: torch.dtype,
                 flags: Mapping[str, Any]) -> DRUNet:
    """DRUNet from its stored kwargs or, for a plain state dict, from its shapes; strict load."""
    other = sorted(set(flags) - {"image_size"})
    if other:
        raise CheckpointError(f"{path} is a DRUNet file: ADM flags {', '.join(other)} do not apply (only image_size)")
    state_dict = ckpt["state_dict"]
    try:
        kwargs = ckpt["kwargs"] or drunet_kwargs(state_dict)
        model = DRUNet(**kwargs, image_size=flags.get("image_size"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a DRUNet layout this loader builds ({_first_line(err)})") from None
    check_state_dict(model, state_dict, source=os.fspath(path))
    model.load_state_dict(state_dict, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
