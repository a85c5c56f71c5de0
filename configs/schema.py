"""The run-config schema: defaults in one place, validated before any work starts.

A config is plain YAML data. Unknown keys (with the nearest valid key suggested) and wrong types
are reported in one line naming the key and the file. The `sampler` block is passed to
`build_sampler` and checked by building the sampler.
"""
from __future__ import annotations

import argparse
import copy
import difflib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml

from guided_diffusion.image_io import RESIZE_POLICIES
from guided_diffusion.runtime import PRECISIONS, SDPA_BACKENDS

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
    "data": {"input": None, "resize": "center_crop", "limit": None},
    "progress_every": 0,
    "num_samples": 4,
    "batch_size": 4,
    "seed": 0,
    "device": "auto",
    "output": "results/run",
    "grid": True,
}
_TYPES: Dict[str, tuple] = {
    "model.checkpoint": (str,), "model.flags": (dict,), "model.precision": (str,), "model.channels_last": (bool,),
    "model.compile": (bool,), "model.sdpa": (str,), "model.checkpointing": (bool,), "sampler": (dict,),
    "task.operator": (dict,), "task.noise": (dict,), "data.input": (str,), "data.resize": (str,),
    "data.limit": (int,), "progress_every": (int,),
    "num_samples": (int,), "batch_size": (int,), "seed": (int,), "device": (str,), "output": (str,),
    "grid": (bool,),
}
# Blocks whose inner keys are free-form (checked by their consumer).
_OPEN_BLOCKS = {"sampler", "model.flags", "task.operator", "task.noise"}


class ConfigError(ValueError):
    """A config problem, reported as one line naming the key and the file."""


def _type_ok(value: Any, expected: tuple) -> bool:
    # bool is a subclass of int in Python; `steps: true` must not pass as an integer.
    if isinstance(value, bool):
        return bool in expected
    return isinstance(value, expected)


def _merge(base: Dict[str, Any], update: Dict[str, Any], source: str, prefix: str = "") -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if prefix.rstrip(".") in _OPEN_BLOCKS:
            out[key] = value
            continue
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}")
        expected = _TYPES.get(dotted)
        if value is not None and expected and not _type_ok(value, expected):
            names = "/".join(t.__name__ for t in expected)
            raise ConfigError(f"{source}: '{dotted}' must be {names}, got {type(value).__name__} {value!r}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, source, dotted + ".")
        else:
            out[key] = value
    return out


def parse_set(item: str) -> Dict[str, Any]:
    """'a.b=value' -> {'a': {'b': value}}, value parsed as YAML (numbers, booleans, lists)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def read_yaml_mapping(path: str) -> Dict[str, Any]:
    """A YAML file whose top level is a mapping; one-line ConfigError for a missing or bad file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p.resolve()}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
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
        cfg = _merge(cfg, parse_set(item), "--set")
    _check_values(cfg, str(path or "--set"))
    return cfg


def _check_values(cfg: Dict[str, Any], source: str) -> None:
    problems: List[str] = []
    for key in ("num_samples", "batch_size"):
        if cfg[key] < 1:
            problems.append(f"'{key}' must be >= 1, got {cfg[key]}")
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
    if cfg["device"] != "auto" and not cfg["device"].split(":")[0] in ("cpu", "cuda", "mps"):
        problems.append(f"'device' must be auto, cpu, cuda[:N] or mps, got {cfg['device']!r}")
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
    return torch.device(name)
