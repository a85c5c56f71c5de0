"""Name -> builder tables for operators and noise models (the ``name`` of a YAML block)."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Callable, Union

import torch

from operators.base import Operator
from operators.blur import build_gaussian_blur, build_motion_blur, build_sr_blur_decimation, build_uniform_blur
from operators.color import Colorization
from operators.ddrm_deblurring import DDRMDeblurring
from operators.gdp import build_hdr, build_low_light
from operators.inpainting import build_inpainting
from operators.noise import GaussianNoise, NoNoise, PoissonNoise
from operators.nonlinear_blur import build_nonlinear_blur
from operators.phase import PhaseRetrieval
from operators.resize import SeparableResize

OPERATORS: dict[str, Callable[..., Operator]] = {
    "super_resolution": SeparableResize,
    "sr_blur_decimation": build_sr_blur_decimation,
    "gaussian_blur": build_gaussian_blur,
    "uniform_blur": build_uniform_blur,
    "motion_blur": build_motion_blur,
    "inpainting": build_inpainting,
    "colorization": Colorization,
    "ddrm_deblurring": DDRMDeblurring,
    "phase_retrieval": PhaseRetrieval,
    "low_light": build_low_light,
    "hdr": build_hdr,
    "nonlinear_blur": build_nonlinear_blur,
}

NOISES: dict[str, Callable[..., Any]] = {"gaussian": GaussianNoise, "poisson": PoissonNoise, "clean": NoNoise}

# Parameters that are objects rather than YAML values; they are not recorded in ``op.params``.
RUNTIME_ONLY = ("generator",)


def _lookup(table: dict[str, Callable[..., Any]], kind: str, name: str, params: dict[str, Any]) -> Callable[..., Any]:
    """Return the builder, or raise a one-line ValueError naming the bad name or parameter."""
    if name not in table:
        close = difflib.get_close_matches(str(name), table, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown {kind} '{name}'{hint}; known: {', '.join(table)}")
    builder = table[name]
    accepted = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        for key in params:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"unknown parameter '{key}' for {kind} '{name}'{hint}; "
                                 f"accepted: {', '.join(accepted) or 'none'}")
    return builder


def _yaml_safe(value: Any) -> Any:
    """Tuples become lists so ``yaml.safe_dump(op.params)`` works."""
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    return value


def build_operator(name: str, **params: Any) -> Operator:
    """Build an operator by its YAML name, e.g. ``build_operator("gaussian_blur", intensity=3.0)``."""
    op = _lookup(OPERATORS, "operator", name, params)(**params)
    op.name = name
    op.params = {k: _yaml_safe(v) for k, v in params.items() if k not in RUNTIME_ONLY}
    return op


def list_operators() -> list[str]:
    """Registered operator names (``nonlinear_blur`` is listed but raises when built)."""
    return list(OPERATORS)


def build_noise(name: str, **params: Any) -> Callable[..., Any]:
    """Noise model ``noise(y, generator=g)``: "gaussian" (sigma), "poisson" (rate) or "clean"."""
    return _lookup(NOISES, "noise", name, params)(**params)


def list_noises() -> list[str]:
    """Registered noise names."""
    return list(NOISES)


def load_operator(path: Union[str, Path]) -> Operator:
    """Rebuild an operator written by ``Operator.save`` (same name, params and state)."""
    data = torch.load(str(path), weights_only=True)
    op = build_operator(data["name"], **data["params"])
    op.load_state_dict(data["state"])
    return op
