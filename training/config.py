"""The training-config schema: every key with its default and type in one table, validated before
any work starts. Problems are reported in one line naming the key and the file (configs.ConfigError).
"""
from __future__ import annotations

import copy
import difflib
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from configs.schema import DEVICE_PATTERN, SEED_MAX, ConfigError, parse_set, read_yaml_mapping
from guided_diffusion.diffusion import get_named_beta_schedule
from guided_diffusion.models import MODEL_DEFAULTS, unet_kwargs
from guided_diffusion.runtime import PRECISIONS

# dotted key -> (default, accepted types). "model.flags" is free-form: create_model checks it.
SCHEMA: Dict[str, Tuple[Any, Tuple[type, ...]]] = {
    "model.flags": ({}, (dict,)),                       # create_model flags; image_size = crop size
    "diffusion.schedule": ("linear", (str,)),           # linear | cosine
    "diffusion.num_train_timesteps": (1000, (int,)),
    "loss.vlb_weight": (0.001, (float,)),               # lambda of L_hybrid, used when learn_sigma
    "data.input": (None, (str,)),                       # an image folder (searched recursively)
    "data.load_size": (None, (int,)),                   # null: native size; else shorter side -> this, centre square
    "data.flip": (True, (bool,)),                       # random horizontal flips
    "optim.lr": (1e-4, (float,)),
    "optim.weight_decay": (0.0, (float,)),
    "optim.grad_clip": (1.0, (float,)),                 # max global gradient norm; null: no clipping
    "optim.ema_rate": (0.9999, (float,)),
    "batch_size": (8, (int,)),
    "steps": (1000, (int,)),                            # total optimizer steps of the run
    "precision": ("fp32", (str,)),                      # fp32 | fp16 | bf16 (autocast; GPU only)
    "seed": (0, (int,)),
    "device": ("auto", (str,)),                         # auto | cpu | cuda[:N]
    "output": ("results/train", (str,)),
    "save_every": (1000, (int,)),                       # steps between checkpoints (and at the end)
    "log_every": (10, (int,)),                          # steps averaged per log line
}
OPEN_KEYS = {"model.flags"}
# Keys that take null besides those whose default is null.
NULLABLE_KEYS = {"optim.grad_clip"}
# Keys a resumed run may change: they do not alter what a step computes (the device type is
# checked against the saved random streams).
RESUMABLE_KEYS = {"steps", "save_every", "log_every", "output", "device"}


def _nest(flat: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for dotted, value in flat.items():
        *blocks, leaf = dotted.split(".")
        node = out
        for b in blocks:
            node = node.setdefault(b, {})
        node[leaf] = copy.deepcopy(value)
    return out


DEFAULTS: Dict[str, Any] = _nest({k: default for k, (default, _) in SCHEMA.items()})


def flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, stopping at the free-form OPEN_KEYS."""
    flat: Dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in OPEN_KEYS:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _checked(dotted: str, value: Any, source: str) -> Any:
    """`value` for `dotted` after the type check (ints and numeric strings become floats for float keys)."""
    if dotted not in SCHEMA:
        inner = [k for k in SCHEMA if k.startswith(dotted + ".")]
        if inner:
            raise ConfigError(f"{source}: '{dotted}' must be a mapping of keys ({', '.join(inner)})")
        close = difflib.get_close_matches(dotted, list(SCHEMA), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: unknown key '{dotted}'{hint}")
    default, types = SCHEMA[dotted]
    if value is None and (default is None or dotted in NULLABLE_KEYS):
        return value
    if float in types and isinstance(value, str):
        # PyYAML reads 1e-4 (no dot) as a string; accept any numeric spelling for float keys.
        try:
            return float(value)
        except ValueError:
            pass
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int: `steps: true` must not pass as an integer.
    if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
        names = "/".join(t.__name__ for t in types)
        raise ConfigError(f"{source}: '{dotted}' must be {names}, got {type(value).__name__} {value!r}")
    return value


def _apply(cfg: Dict[str, Any], update: Dict[str, Any], source: str) -> Dict[str, Any]:
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys")
    flat = flatten(cfg)
    for key, value in flatten(update).items():
        value = _checked(key, value, source)
        # `--set model.flags.dropout=0.1` adds to the flags instead of replacing them all.
        flat[key] = {**flat[key], **value} if key in OPEN_KEYS and value is not None else value
    return _nest(flat)


def load_train_config(path: Optional[str], overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a YAML training config, apply `--set key=value` overrides, validate; returns the full config."""
    cfg = copy.deepcopy(DEFAULTS)
    source = str(path) if path is not None else "--set"
    if path is not None:
        cfg = _apply(cfg, read_yaml_mapping(path), source)
    for item in overrides:
        cfg = _apply(cfg, parse_set(item), "--set")
    check_values(cfg, source)
    return cfg


def model_flags(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Every create_model flag of the run (defaults filled in), as stored in exported models."""
    return {**MODEL_DEFAULTS, **cfg["model"]["flags"]}


def check_values(cfg: Dict[str, Any], source: str) -> None:
    """Range and consistency checks; raises ConfigError with the first problem."""
    flags = model_flags(cfg)
    problems: List[str] = []
    try:
        unet_kwargs(**cfg["model"]["flags"])
    except (TypeError, ValueError) as err:
        problems.append(f"'model.flags': {err}")
    if flags["use_fp16"]:
        problems.append("'model.flags.use_fp16' would train a float16 network without float32 master "
                        "weights; set precision: fp16 (autocast) instead")
    if flags["class_cond"]:
        problems.append("'model.flags.class_cond' needs class labels, which an image folder does not give")
    try:
        get_named_beta_schedule(cfg["diffusion"]["schedule"], max(1, cfg["diffusion"]["num_train_timesteps"]))
    except ValueError as err:
        problems.append(f"'diffusion.schedule': {err}")
    minimums = {"diffusion.num_train_timesteps": 1, "batch_size": 1, "steps": 1, "save_every": 1,
                "log_every": 1, "optim.weight_decay": 0.0, "loss.vlb_weight": 0.0}
    flat = flatten(cfg)
    problems += [f"'{k}' must be a finite number, got {v}" for k, v in flat.items()
                 if isinstance(v, float) and not math.isfinite(v)]
    problems += [f"'{k}' must be >= {lo}, got {flat[k]}" for k, lo in minimums.items() if flat[k] < lo]
    if not 0 <= cfg["seed"] <= SEED_MAX:
        problems.append(f"'seed' must be in [0, 2^63 - 1], got {cfg['seed']}")
    if not cfg["optim"]["lr"] > 0:
        problems.append(f"'optim.lr' must be > 0, got {cfg['optim']['lr']}")
    if not 0 <= cfg["optim"]["ema_rate"] < 1:
        problems.append(f"'optim.ema_rate' must be in [0, 1), got {cfg['optim']['ema_rate']}")
    if cfg["optim"]["grad_clip"] is not None and not cfg["optim"]["grad_clip"] > 0:
        problems.append(f"'optim.grad_clip' must be > 0 or null, got {cfg['optim']['grad_clip']}")
    if not cfg["data"]["input"]:
        problems.append("'data.input' (a folder of training images) is required")
    load_size = cfg["data"]["load_size"]
    if load_size is not None and load_size < int(flags["image_size"]):
        problems.append(f"'data.load_size' ({load_size}) must be >= model.flags.image_size ({flags['image_size']})")
    if cfg["precision"] not in PRECISIONS:
        problems.append(f"'precision' must be one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
    if not DEVICE_PATTERN.fullmatch(cfg["device"]) or cfg["device"] == "mps":
        problems.append(f"'device' must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), got {cfg['device']!r}")
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")


def check_resumable(saved: Dict[str, Any], cfg: Dict[str, Any], source: str) -> None:
    """Refuse to resume a run (config `saved`) under a config that changes what a step computes."""
    old, new = flatten(saved), flatten(cfg)
    for key in sorted((set(old) | set(new)) - RESUMABLE_KEYS):
        if old.get(key) != new.get(key):
            raise ConfigError(f"--resume: '{key}' is {new.get(key)!r} but the run in {source} used "
                              f"{old.get(key)!r}; only {', '.join(sorted(RESUMABLE_KEYS))} may change")
