"""Declared types and ranges of sampler parameters, checked once (by `build_sampler`) before building.

Every sampler class lists its own constructor parameters in a `param_specs` class attribute; the
parameters every sampler takes (`Sampler.__init__`) are `COMMON`. A bad value is a ValueError
naming the parameter as `sampler.<name>`, the key a YAML config sets it under.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Param:
    """One parameter: kind int, float (ints accepted), bool or str; bounds low / high (None:
    unbounded), closed unless low_open; choices: the allowed strings (empty: any); nullable: None
    is allowed; length > 0: a list of that many values, each checked as above (e.g. Adam's betas)."""

    kind: type
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: Tuple[str, ...] = ()
    nullable: bool = False
    length: int = 0

    def problem(self, value: Any) -> Optional[str]:
        """Why `value` is not allowed (a phrase), or None when it is."""
        if value is None:
            return None if self.nullable else f"must be {self._kind_name()}, got null"
        if self.length:
            if not isinstance(value, (list, tuple)) or len(value) != self.length:
                return f"must be a list of {self.length} values, each {self._kind_name()}, got {value!r}"
            return next((f"item {j} {p}" for j, p in enumerate(map(self._item_problem, value)) if p), None)
        return self._item_problem(value)

    def _item_problem(self, value: Any) -> Optional[str]:
        # bool is a subclass of int: `steps: true` must not pass as a number.
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, self._accepted()):
            return f"must be {self._kind_name()}, got {type(value).__name__} {value!r}"
        if self.kind is float and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if below or self.high is not None and value > self.high:
            return f"must be in {self._range()}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        return None

    def _accepted(self) -> Tuple[type, ...]:
        return (int, float) if self.kind is float else (self.kind,)

    def _kind_name(self) -> str:
        return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]

    def _range(self) -> str:
        lo = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        hi = "inf)" if self.high is None else f"{self.high:g}]"
        return f"{lo}, {hi}"


# Sampler.__init__'s parameters, which every sampler accepts.
COMMON: Dict[str, Param] = {
    "steps": Param(int, low=1),
    "schedule": Param(str, choices=("linear", "cosine")),
    "num_train_timesteps": Param(int, low=1),
    "timestep_respacing": Param(str, nullable=True),
    "clip_denoised": Param(bool),
    "var_type": Param(str, choices=("learned_range", "fixed_small", "fixed_large"), nullable=True),
    "patch_size": Param(int, low=1, nullable=True),
    "patch_stride": Param(int, low=1),
}


def specs_of(cls: type) -> Dict[str, Param]:
    """COMMON plus the `param_specs` of `cls` and of every sampler class it derives from."""
    specs = dict(COMMON)
    for klass in reversed(cls.__mro__):
        specs.update(vars(klass).get("param_specs", {}))
    return specs


def check_params(sampler: str, specs: Mapping[str, Param], params: Mapping[str, Any]) -> None:
    """Raise ValueError for the first unknown or bad parameter, naming it `sampler.<name>`."""
    for key, value in params.items():
        if key not in specs:
            raise ValueError(f"'sampler.{key}' is not a parameter of {sampler!r}{_hint(key, specs)}; "
                             f"it takes {', '.join(sorted(specs))}")
        problem = specs[key].problem(value)
        if problem:
            raise ValueError(f"'sampler.{key}' {problem}")


def _hint(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean 'sampler.{close[0]}'?)" if close else ""
