"""The run-config schema: defaults in one place, validated before any work starts.

A config is plain YAML data (UTF-8; 1e-4 reads as a number, as in YAML 1.2). Unknown keys (with the
nearest valid key suggested), wrong types, out-of-range values and NaN / Inf anywhere are reported
in one line naming the key and the file. A block left empty (`model:` with every child commented
out reads as null) takes its defaults. The `sampler` block is checked by building the sampler
(`build_sampler`: declared types and ranges of each parameter), `model.flags` by
`check_model_flags`. `--set KEY=VALUE` replaces KEY's value: a mapping value replaces the whole
block (filled with the block's defaults), so `--set sampler={name: dps, scale: 0.3}` switches
samplers, while `--set sampler.scale=0.3` changes one key of the current block.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from guided_diffusion.image_io import MAX_PIXELS, RESIZE_POLICIES
from guided_diffusion.models import check_model_flags
from guided_diffusion.runtime import PRECISIONS, SDPA_BACKENDS
from samplers import build_sampler

REPO = Path(__file__).resolve().parents[1]

# Every key a config may set, with its default. A default of None means "no value" and accepts
# the type given in _TYPES.
DEFAULTS: Dict[str, Any] = {
    # Run-time options (guided_diffusion/runtime.py): precision fp32 | fp16 | bf16 (autocast),
    # channels_last, compile (torch.compile), sdpa (attention backend), checkpointing (activation
    # checkpointing: less memory for DPS/DPPS backward passes, more time).
    "model": {"checkpoint": None, "flags": {}, "precision": "fp32", "channels_last": False, "compile": False,
              "sdpa": "auto", "checkpointing": False},
    "sampler": {"name": "ddpm"},
    # Restoration: an operator block {name, params...} and a noise block {name, params...};
    # without an operator the run samples the prior (num_samples images).
    "task": {"operator": None, "noise": None},
    # max_pixels: images above it (width x height, read from the header) are skipped undecoded.
    "data": {"input": None, "resize": "center_crop", "limit": None, "max_pixels": MAX_PIXELS},
    "progress_every": 0,
    "num_samples": 4,
    "batch_size": 4,
    "seed": 0,
    "device": "auto",
    "output": "results/run",
    "grid": True,
    # Mid-trajectory sampling state (runs/resume.py): saved every N steps and/or every M minutes
    # (0 turns either off), so a killed run loses at most that much of a batch.
    "state_every_steps": 0,
    "state_every_minutes": 1.0,
}
_TYPES: Dict[str, tuple] = {
    "model.checkpoint": (str,), "model.flags": (dict,), "model.precision": (str,), "model.channels_last": (bool,),
    "model.compile": (bool,), "model.sdpa": (str,), "model.checkpointing": (bool,), "sampler": (dict,),
    "task.operator": (dict,), "task.noise": (dict,), "data.input": (str,), "data.resize": (str,),
    "data.limit": (int,), "data.max_pixels": (int,), "progress_every": (int,),
    "num_samples": (int,), "batch_size": (int,), "seed": (int,), "device": (str,), "output": (str,),
    "grid": (bool,), "state_every_steps": (int,), "state_every_minutes": (int, float),
}
# Blocks whose inner keys are free-form (checked by their consumer).
_OPEN_BLOCKS = {"sampler", "model.flags", "task.operator", "task.noise"}


SEED_MAX = 2 ** 63 - 1  # seeds are non-negative 64-bit integers
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # the `device` key's spellings


class ConfigError(ValueError):
    """A config problem, reported as one line naming the key and the file."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading 1e-4 and 1.0e5 as numbers (YAML 1.1 wants a dot and a signed
    exponent, so PyYAML returns them as strings, which no number key takes)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _type_ok(value: Any, expected: tuple) -> bool:
    # bool is a subclass of int in Python; `steps: true` must not pass as an integer.
    if isinstance(value, bool):
        return bool in expected
    return isinstance(value, expected)


def _default(dotted: str) -> Any:
    """The DEFAULTS value at a dotted key (None where there is none)."""
    value: Any = DEFAULTS
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _merge(base: Dict[str, Any], update: Dict[str, Any], source: str, prefix: str = "",
           replace: Optional[str] = None) -> Dict[str, Any]:
    """`update` merged into `base`, checked; at the dotted key `replace` a mapping starts from the
    block's defaults instead of merging into base's block (a whole-block `--set`)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if prefix.rstrip(".") in _OPEN_BLOCKS:
            out[key] = value
            continue
        if key not in base:
            close = difflib.get_close_matches(str(key), list(base), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}")
        default = _default(dotted)
        if value is None and isinstance(default, dict):
            out[key] = copy.deepcopy(default)  # an empty block (YAML null): its defaults
            continue
        if value is None and default is not None and dotted not in _OPEN_BLOCKS:
            raise ConfigError(f"{source}: '{dotted}' must not be null (its default is {default!r})")
        if isinstance(default, dict) and not isinstance(value, dict):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping of keys, got {type(value).__name__} {value!r}")
        expected = _TYPES.get(dotted)
        if value is not None and expected and not _type_ok(value, expected):
            names = "/".join(t.__name__ for t in expected)
            raise ConfigError(f"{source}: '{dotted}' must be {names}, got {type(value).__name__} {value!r}")
        if isinstance(value, dict):
            start = default if dotted == replace else base[key]
            out[key] = _merge(copy.deepcopy(start) or {}, value, source, dotted + ".", replace)
        else:
            out[key] = value
    return out


def split_set(item: str) -> Tuple[str, Any]:
    """'a.b=value' -> ('a.b', value), value parsed as YAML (numbers, booleans, lists, {k: v} blocks)."""
    key, eq, raw = item.partition("=")
    key = key.strip()
    if not eq or not key or not all(part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected key=value (key: dotted names such as sampler.steps)")
    try:
        value: Any = _yaml_load(raw) if raw else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    return key, value


def parse_set(item: str) -> Dict[str, Any]:
    """'a.b=value' -> {'a': {'b': value}}, value parsed as YAML (numbers, booleans, lists)."""
    key, value = split_set(item)
    for part in reversed(key.split(".")):
        value = {part.strip(): value}
    return value


def read_yaml_mapping(path: str) -> Dict[str, Any]:
    """A YAML file whose top level is a mapping; one-line ConfigError for a missing or bad file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p.resolve()}")
    try:
        data = _yaml_load(p.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                          f"save the config as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return data


def add_config_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The --config FILE and repeatable --set KEY=VALUE options every run script takes."""
    parser.add_argument("--config", help="YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {example} (repeatable)")


def load_config(path: Optional[str], overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a YAML config (or none: the defaults), apply `--set key=value` overrides, validate."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = _merge(cfg, read_yaml_mapping(path), str(path))
    for item in overrides:
        key, _ = split_set(item)
        cfg = _merge(cfg, parse_set(item), f"--set {item!r}", replace=key)
    source = str(path or "--set")
    _check_finite(cfg, source)
    _check_values(cfg, source)
    _check_blocks(cfg, source)
    return cfg


def _check_finite(value: Any, source: str, key: str = "") -> None:
    """NaN or Inf anywhere (YAML .nan / .inf) is refused, naming its key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, source, f"{key}[{i}]")


def _check_blocks(cfg: Dict[str, Any], source: str) -> None:
    """The free-form blocks checked by their consumers: model.flags and the sampler (built once
    here, so a bad step size or step count is refused before the model loads)."""
    try:
        check_model_flags(cfg["model"]["flags"], prefix="model.flags.")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from None
    params = dict(cfg["sampler"])
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'sampler.name' is required (one of the registered samplers), got {name!r}")
    try:
        build_sampler(name, **params)
    except (TypeError, ValueError) as err:
        message = str(err).splitlines()[0]
        named = message.startswith("'sampler.")  # build_sampler's own checks name the key
        raise ConfigError(f"{source}: {message if named else 'sampler: ' + message}") from None


def _check_values(cfg: Dict[str, Any], source: str) -> None:
    problems: List[str] = []
    for key in ("num_samples", "batch_size"):
        if cfg[key] < 1:
            problems.append(f"'{key}' must be >= 1, got {cfg[key]}")
    for key in ("state_every_steps", "state_every_minutes"):
        if not cfg[key] >= 0:
            problems.append(f"'{key}' must be >= 0, got {cfg[key]}")
    if cfg["progress_every"] < 0:
        problems.append(f"'progress_every' must be >= 0, got {cfg['progress_every']}")
    for key, allowed in (("precision", PRECISIONS), ("sdpa", SDPA_BACKENDS)):
        if cfg["model"][key] not in allowed:
            problems.append(f"'model.{key}' must be one of {', '.join(allowed)}, got {cfg['model'][key]!r}")
    if cfg["data"]["resize"] not in RESIZE_POLICIES:
        problems.append(f"'data.resize' must be one of {', '.join(RESIZE_POLICIES)}, got {cfg['data']['resize']!r}")
    if cfg["data"]["limit"] is not None and cfg["data"]["limit"] < 1:
        problems.append(f"'data.limit' must be >= 1, got {cfg['data']['limit']}")
    for block in ("operator", "noise"):
        spec = cfg["task"][block]
        if spec is not None and not isinstance(spec.get("name"), str):
            problems.append(f"'task.{block}' needs a 'name'")
    if cfg["task"]["operator"] is not None and not cfg["data"]["input"]:
        problems.append("'data.input' (an image or a folder) is required with task.operator")
    if not DEVICE_PATTERN.fullmatch(cfg["device"]):
        problems.append(f"'device' must be auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps, got {cfg['device']!r}")
    if not 0 <= cfg["seed"] <= SEED_MAX:
        problems.append(f"'seed' must be in [0, 2^63 - 1], got {cfg['seed']}")
    if cfg["data"]["max_pixels"] < 1:
        problems.append(f"'data.max_pixels' must be >= 1, got {cfg['data']['max_pixels']}")
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")


def resolve_path(path: str) -> Path:
    """A config path: relative paths are taken from the working directory, else the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO / p if (REPO / p).exists() else p


def pick_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """The `device` key: "auto" (CUDA if present, else CPU), "cpu", "cuda[:N]", "mps". Under a
    multi-process launch (`local_rank` given) "auto" and "cuda" mean cuda:local_rank, one GPU each."""
    if local_rank is not None and name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but there are {torch.cuda.device_count()} CUDA device(s)")
    return device
