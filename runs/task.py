"""The restoration task of a run config: operator, noise, per-image generators and the measurement.

`scripts/sample.py` and `scripts/baseline.py` build y from these same pieces, so a classical
baseline sees exactly the tensor the sampler saw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from configs import ConfigError, resolve_path
from configs.schema import REPO
from guided_diffusion.image_io import images_by_stem
from operators import OperatorUnavailable, build_noise, build_operator
from operators.base import NonlinearOperatorError

# Stream offsets keep the sampler's and the measurement noise's generators independent.
SAMPLER_STREAM, NOISE_STREAM = 0, 1


def generators(seed: int, indices: Sequence[int], stream: int, device: torch.device) -> List[torch.Generator]:
    """One generator per image, seeded from (seed, image index, stream), reduced to torch's 64-bit
    seed range (every seed below 2^61 / 1_000_003 keeps its value)."""
    return [torch.Generator(device).manual_seed(((seed * 1_000_003 + k) * 4 + stream) % 2 ** 64) for k in indices]


def measure(op, noise, x: torch.Tensor, noise_generators: List[torch.Generator]) -> torch.Tensor:
    """y = noise(A x), image j with noise_generators[j]: (N, C, H, W) in [-1, 1] -> A's output shape."""
    with torch.no_grad():
        return torch.cat([noise(op.forward(x[j:j + 1]), generator=g) for j, g in enumerate(noise_generators)])


def input_files(cfg: Dict[str, Any]) -> List[Path]:
    """The images of a run config's `data.input`, cut to `data.limit` (see `image_files`)."""
    files = image_files(cfg["data"]["input"], "data.input")
    return files[: cfg["data"]["limit"]] if cfg["data"]["limit"] else files


def image_files(source: str, key: str) -> List[Path]:
    """The images of `source` (a file or a folder, searched recursively), sorted; one-line
    ConfigError naming `key` for a missing folder (naming the script that builds the papers' test
    sets under data/) and for two images sharing a stem (outputs are named by stem)."""
    path = resolve_path(source)
    try:
        return list(images_by_stem(path).values())
    except FileNotFoundError as err:
        hint = ""
        if (REPO / "data") in path.absolute().parents:
            hint = ("; the papers' test sets are built from a local FFHQ / ImageNet copy by "
                    "python data/build_testset.py (see its --help)")
        raise ConfigError(f"{key}: {err}{hint}") from None
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def build_task_part(kind: str, spec: Dict[str, Any], builder: Callable[..., Any]) -> Any:
    """builder(spec["name"], **rest) for task.operator / task.noise; bad specs become one-line ConfigErrors."""
    params = dict(spec)
    name = params.pop("name")
    try:
        return builder(name, **params)
    except (TypeError, ValueError, FileNotFoundError, OperatorUnavailable) as err:
        raise ConfigError(f"task.{kind}: {err}") from None


def build_task(cfg: Dict[str, Any]) -> Tuple[Optional[Any], Optional[Any]]:
    """(operator, noise) of a run config; (None, None) without task.operator (prior sampling)."""
    spec = cfg["task"]["operator"]
    if not spec:
        return None, None
    op = build_task_part("operator", spec, build_operator)
    return op, build_task_part("noise", cfg["task"]["noise"] or {"name": "clean"}, build_noise)


def dry_run(op, channels: int, height: int, width: int, device: torch.device, what: str = "the model's") -> None:
    """Refuse an operator that cannot restore (C, H, W) images, before any work: A must accept the
    image, and a linear A's transpose and pseudo-inverse must return the image's shape (a factor 3
    on 64 pixels passes A but not its way back)."""
    name = getattr(op, "name", type(op).__name__)
    x = torch.zeros(1, channels, height, width, device=device)
    try:
        with torch.no_grad():
            y = op.forward(x)
            for way in ("transpose", "pinv"):
                try:
                    back = getattr(op, way)(y)
                except NonlinearOperatorError:
                    continue
                if tuple(back.shape) != tuple(x.shape):
                    raise ValueError(f"its {way} returns {tuple(back.shape[-2:])} for {(height, width)} images")
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"task.operator {name!r} cannot act on {what} {height}x{width} images: "
                          f"{str(err).splitlines()[0]}") from None
