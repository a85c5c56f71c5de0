"""The sampler protocol, the one reverse-diffusion loop, and the registry mapping YAML names to classes."""
from __future__ import annotations

import abc
import difflib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
from tqdm.auto import tqdm

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model, randn

from .patches import PatchedModel
from .params import check_params, specs_of

Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


class NonFiniteError(FloatingPointError):
    """Sampling produced NaN or Inf; `images` holds the batch indices affected."""

    def __init__(self, message: str, images: List[int]):
        super().__init__(message)
        self.images = images
_REGISTRY: Dict[str, Type["Sampler"]] = {}


def register(name: str) -> Callable[[Type["Sampler"]], Type["Sampler"]]:
    """Class decorator: make a sampler available to `build_sampler(name)` and YAML configs."""
    def wrap(cls: Type["Sampler"]) -> Type["Sampler"]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def list_samplers() -> List[str]:
    return sorted(_REGISTRY)


def prior_samplers() -> List[str]:
    """The registered samplers that sample without a measurement (`Sampler.needs_operator` False)."""
    return [name for name in list_samplers() if not _REGISTRY[name].needs_operator]


def build_sampler(name: str, **params: Any) -> "Sampler":
    """Instantiate a registered sampler from its YAML name and parameters.

    Parameters are checked against the class's declared types and ranges first (`params.Param`:
    finite numbers, int vs float, bounds), so a bad value is refused before any work, naming the
    key as `sampler.<param>`.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1) if isinstance(name, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"'sampler.name': unknown sampler {name!r}{hint} known: {', '.join(list_samplers())}")
    cls = _REGISTRY[name]
    check_params(name, specs_of(cls), params)
    return cls(**params)


class Sampler(abc.ABC):
    """Reverse diffusion over a (respaced) grid; subclasses define one step.

    steps: number of steps actually taken, spread over the training grid (respacing "N"), unless
    `timestep_respacing` says otherwise ("ddim50", "10,20"); schedule / num_train_timesteps: the
    model's training schedule (ADM: linear, 1000); clip_denoised: clamp x0_hat to [-1, 1];
    var_type: None (learned_range for a 2C-channel model, else fixed_small), or a fixed type;
    patch_size / patch_stride: run the model on overlapping patches of that size (any-size images,
    `samplers.patches.PatchedModel`); None calls the model on the whole image.
    needs_operator: whether the sampler restores a measurement (op, y); a run refuses it without
    task.operator before any work. Only samplers of the prior (ddpm, ddim) set it False.
    """

    name = "base"
    needs_operator = True

    def __init__(self, steps: int = 1000, schedule: str = "linear", num_train_timesteps: int = 1000,
                 timestep_respacing: Optional[str] = None, clip_denoised: bool = True,
                 var_type: Optional[str] = None, patch_size: Optional[int] = None, patch_stride: int = 128):
        if not 1 <= int(steps) <= num_train_timesteps:
            raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
        self.steps = int(steps)
        self.clip_denoised = clip_denoised
        self.var_type = var_type
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.diffusion = GaussianDiffusion.from_config(
            schedule, num_train_timesteps, timestep_respacing or self.default_respacing())

    def default_respacing(self) -> str:
        return str(self.steps)

    @property
    def num_steps(self) -> int:
        """How many indices the loop counts down (callback's i and `start`'s index lie in
        [0, num_steps)): the grid's steps, or a method's own loop length (DDNM's visits)."""
        return self.diffusion.num_timesteps

    @abc.abstractmethod
    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        """One reverse step from grid index t; returns (x_{t-1}, x0_hat)."""

    def check_task(self, op: Any) -> None:
        """Raise ValueError if this sampler cannot restore measurements of `op` (called by the run
        before any work; samplers with needs beyond `op.forward` override it)."""

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """x_T ~ N(0, I); methods with a measurement-aware start override this."""
        return randn(shape, generator, device, dtype)

    def sample(self, model: Model, op: Any = None, y: Optional[torch.Tensor] = None, sigma: float = 0.0,
               shape: Optional[Sequence[int]] = None, generator: Optional[Generators] = None,
               callback: Optional[Callback] = None, progress: bool = False,
               device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
               start: Optional[Tuple[int, torch.Tensor]] = None) -> torch.Tensor:
        """Run the reverse process and return x_0, (B, C, H, W) in [-1, 1] (when clip_denoised).

        The device and dtype follow y when given, else the generator's device. `generator` may be
        one per image (see `guided_diffusion.diffusion.randn`). `callback(i, x_t, x0_hat)` sees
        every step, after step index i (x_t is then the state step i - 1 starts from).
        start: (i, x_t) resumes a trajectory at step index i from a state a callback saw after step
        i + 1; with the generators and the operator restored to their states of that moment, the
        result is the uninterrupted run's, bit for bit on the CPU (samplers keep no other state).
        """
        if generator is None:
            raise ValueError("pass a torch.Generator (samplers never draw from the global RNG)")
        if shape is None:
            raise ValueError("pass the output shape (B, C, H, W)")
        if y is not None:
            device, dtype = y.device, y.dtype if y.is_floating_point() else dtype
        first = generator if isinstance(generator, torch.Generator) else generator[0]
        device = torch.device(device) if device is not None else first.device
        if self.patch_size is not None:
            model = PatchedModel(model, self.patch_size, self.patch_stride)
        first_index = self.diffusion.num_timesteps - 1
        if start is None:
            x = self.initial_state(shape, op, y, sigma, generator, device, dtype)
        else:
            first_index, x = start[0], start[1].to(device, dtype)
        indices = range(first_index, -1, -1)
        for i in tqdm(indices, desc=self.name, leave=False, disable=not progress,
                      total=self.diffusion.num_timesteps, initial=self.diffusion.num_timesteps - 1 - first_index):
            t = self.diffusion.timesteps(shape[0], i, device)
            x, x0_hat = self.step(model, x, t, op, y, sigma, generator)
            self._check_finite(x, x0_hat, i)
            if callback is not None:
                callback(i, x, x0_hat)
        return x

    def step_label(self, i: int) -> str:
        """Where step index i is, in words, for messages: its grid index and training timestep."""
        return f"step index {i} (t = {int(self.diffusion.timestep_map[i])})"

    def _check_finite(self, x: torch.Tensor, x0_hat: torch.Tensor, i: int) -> None:
        """Stop at the first NaN/Inf, naming the sampler, the step and where it came from."""
        bad = ~torch.isfinite(x).flatten(1).all(dim=1)
        if not bool(bad.any()):
            return
        images = bad.nonzero().flatten().tolist()
        cause = ("the network's prediction x0_hat" if not bool(torch.isfinite(x0_hat[bad]).all())
                 else "the update after the prediction (data or guidance step)")
        raise NonFiniteError(f"{self.name}: non-finite values at {self.step_label(i)} in image(s) "
                             f"{images}, from {cause}; try a smaller step size or fp32", images)
