"""DDNM / DDNM+: Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model (Wang, Yu and
Zhang, ICLR 2023, arXiv 2212.00490), as the official simplified path runs it
(wyhuai/DDNM@00b58ea, guided_diffusion/diffusion.py `simplified_ddnm_plus`, L211-415).

Range-null-space decomposition: any x = A^+ A x + (I - A^+ A) x. DDNM keeps the null-space part of
the network's x0 and replaces its range-space part by A^+ y (paper Sec. 3.2):
    x0_ddnm = x0_t - lambda_t A^+ (A x0_t - y)            (lambda_t = 1: A x0_ddnm = y exactly)
DDNM+ (Sec. 3.3) shrinks the correction for noisy y, lambda_t < 1 where the next step's noise could
not absorb the noise lambda_t A^+ n it carries, and adds only the missing noise gamma_t. Time travel
(Sec. 3.3, RePaint's schedule) re-noises x0 back up `travel_length` steps, `travel_repeat` times.
Per denoising visit t -> t' (a = abar_t, a' = abar_t', official L351-387):
  1. eps = model(x_t, t);  x0_t = (x_t - sqrt(1 - a) eps) / sqrt(a), not clamped;
  2. sigma_t = sqrt(1 - a'^2), and lambda_t, gamma_t from sigma_t >= a' sigma_y (the code's
     simplification, README "Traps" 1: a' squared and unsquared where DDIM has sqrt);
  3. x0_ddnm = x0_t - lambda_t A^+(A x0_t - y);
  4. x_t' = sqrt(a') x0_ddnm + gamma_t (c1 z + c2 eps),  c1 = sqrt(1 - a') eta, c2 = sqrt(1 - a') sqrt(1 - eta^2).
Travel visit t -> t'' > t (L388-395): x_t'' = sqrt(abar_t'') x0_t + sqrt(1 - abar_t'') z with the raw
x0_t of the latest denoising visit. `variant: corrected` uses the noise level the DDIM step intends
(sigma_t = sqrt(1 - a'), test sqrt(a') sigma_y, noise gamma_t (eta z + sqrt(1 - eta^2) eps)), so the
state keeps the forward process's variance; no official code runs it.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model, get_named_beta_schedule, randn, randn_like

from .base import Callback, Sampler, register
from .patches import PatchedModel
from .params import Param

VARIANTS = ("simplified", "corrected")


def travel_schedule(steps: int, length: int, repeat: int) -> List[int]:
    """The visited grid indices (RePaint's jump schedule, official `get_schedule_jump` L613-634):
    walk down from steps - 1; at every index j in range(0, steps - length, length) the walk goes back
    up `length` indices, `repeat - 1` times; ends with -1 (the clean image). length = repeat = 1:
    steps - 1, ..., 0, -1."""
    jumps = {j: repeat - 1 for j in range(0, steps - length, length)}
    t, times = steps, []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(length):
                t += 1
                times.append(t)
    return times + [-1]


def visits(times: Sequence[int]) -> List[Tuple[int, int]]:
    """Consecutive pairs (i, j) of `times`; a run of upward (travel) pairs is merged into one jump
    from its first to its last index: each re-noises the same x0 and overwrites the state, so only
    the last one reaches the output (the code draws, and discards, noise for the others)."""
    out: List[Tuple[int, int]] = []
    for i, j in zip(times[:-1], times[1:]):
        if j > i and out and out[-1][1] > out[-1][0]:
            out[-1] = (out[-1][0], j)
        else:
            out.append((i, j))
    return out


@register("ddnm")
class DDNM(Sampler):
    """DDNM / DDNM+ over the official visit schedule; `sample` is overridden (time travel revisits
    grid steps, so the loop runs over visits, not over a descending grid).

    steps: the code's T_sampling (grid t_i = i * (1000 // steps), first visit at (steps - 1) * skip,
    default 100 as the code's); eta: share of fresh noise in the re-noising (configs: 0.85);
    travel_length / travel_repeat: the time-travel l and r (1, 1 = none, the configs' default);
    variant: "simplified" (the code) or "corrected" (module docstring);
    clip_denoised: clamp x0_t to [-1, 1] before the correction (the code never does).
    `sigma` given to `sample` is the measurement std on [-1, 1] (the code's internal sigma_y, twice
    its --sigma_y).
    """

    param_specs = {"eta": Param(float, low=0.0, high=1.0), "travel_length": Param(int, low=1),
                   "travel_repeat": Param(int, low=1), "variant": Param(str, choices=VARIANTS)}

    def __init__(self, steps: int = 100, eta: float = 0.85, travel_length: int = 1, travel_repeat: int = 1,
                 variant: str = "simplified", clip_denoised: bool = False, schedule: str = "linear",
                 num_train_timesteps: int = 1000, **kwargs: Any):
        if "timestep_respacing" in kwargs:
            raise ValueError("DDNM builds its grid from steps (t_i = i * (T // steps)); timestep_respacing is not used")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.eta, self.variant = float(eta), variant
        self.travel_length, self.travel_repeat = int(travel_length), int(travel_repeat)
        super().__init__(steps=steps, schedule=schedule, num_train_timesteps=num_train_timesteps,
                         clip_denoised=clip_denoised, **kwargs)
        skip = num_train_timesteps // self.steps
        self.diffusion = GaussianDiffusion.respaced(get_named_beta_schedule(schedule, num_train_timesteps),
                                                    [i * skip for i in range(self.steps)])
        self.visits = visits(travel_schedule(self.steps, self.travel_length, self.travel_repeat))

    @property
    def num_steps(self) -> int:
        """Loop indices: one per visit, time-travel visits included."""
        return len(self.visits)

    @property
    def nfe(self) -> int:
        """Network calls per image: one per denoising visit."""
        return sum(j < i for i, j in self.visits)

    def check_task(self, op: Any) -> None:
        if op is None or not getattr(op, "is_linear", False) or not callable(getattr(op, "pinv", None)):
            name = getattr(op, "name", None) or type(op).__name__
            raise ValueError(f"ddnm needs a linear operator with a pseudo-inverse (A and A^+); {name!r} is not one")

    def abar(self, i: int) -> float:
        """abar at grid index i; i = -1 is the clean end (abar = 1)."""
        return 1.0 if i < 0 else self.diffusion.alphas_cumprod[i].item()

    def noise_terms(self, a_next: float, sigma_y: float) -> Tuple[float, float]:
        """(lambda_t, gamma_t) of DDNM+ (paper Sec. 3.3; code L356, L368-373) for abar_t' = a_next."""
        if self.variant == "simplified":
            sigma_t, scale = math.sqrt(1 - a_next ** 2), a_next
        else:
            sigma_t, scale = math.sqrt(1 - a_next), math.sqrt(a_next)
        if sigma_t >= scale * sigma_y:
            return 1.0, math.sqrt(sigma_t ** 2 - (scale * sigma_y) ** 2)
        return sigma_t / (scale * sigma_y), 0.0

    def denoise(self, model: Model, x_t: torch.Tensor, i: int, j: int, op: Any, y: torch.Tensor, sigma: float,
                generator: Generators) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One denoising visit from grid index i to j = i - 1: (x_t', x0_t, x0_ddnm)."""
        t = self.diffusion.timesteps(x_t.shape[0], i, x_t.device)
        with torch.no_grad():
            out = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)
            eps, x0_t = out["eps"], out["x0_hat"]                       # Eq. (12) of the paper, not clamped
            a_next = self.abar(j)
            lambda_t, gamma_t = self.noise_terms(a_next, sigma)
            x0_ddnm = x0_t - lambda_t * op.pinv(op.forward(x0_t) - y)  # Sec. 3.2; DDNM+'s Sigma_t = lambda_t I
            x_next = math.sqrt(a_next) * x0_ddnm
            c1, c2 = self.eta, math.sqrt(1 - self.eta ** 2)  # shares of fresh noise and of eps
            if self.variant == "simplified":                 # the code's c1, c2 (L380-381), times gamma_t again
                c1, c2 = math.sqrt(1 - a_next) * c1, math.sqrt(1 - a_next) * c2
            if gamma_t * c1 > 0:
                x_next = x_next + gamma_t * c1 * randn_like(x_t, generator)
            if gamma_t * c2 > 0:
                x_next = x_next + gamma_t * c2 * eps
        return x_next, x0_t, x0_ddnm

    def travel(self, x0_t: torch.Tensor, j: int, generator: Generators) -> torch.Tensor:
        """Re-noise the raw x0_t of the latest denoising visit up to grid index j (q(x_j | x_0))."""
        a = self.abar(j)
        return math.sqrt(a) * x0_t + math.sqrt(1 - a) * randn_like(x0_t, generator)

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        """A denoising visit from grid index t to t - 1 (no time travel)."""
        i = int(t[0])
        x_next, _, x0_ddnm = self.denoise(model, x_t, i, i - 1, op, y, sigma, generator)
        return x_next, x0_ddnm

    def sample(self, model: Model, op: Any = None, y: Optional[torch.Tensor] = None, sigma: float = 0.0,
               shape: Optional[Sequence[int]] = None, generator: Optional[Generators] = None,
               callback: Optional[Callback] = None, progress: bool = False,
               device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
               start: Optional[Tuple[int, torch.Tensor]] = None) -> torch.Tensor:
        """Run the visits and return the last state (not clamped, as the code returns it).

        Indices count visits down: `callback(i, x_t, x0_ddnm)` (the latest denoising visit's x0_ddnm)
        after visit len(visits) - 1 - i, only where the next visit is a denoising one (a travel visit
        needs the x0 of the visit before it, which x_t does not hold), so every state a callback sees
        can be resumed by `start` = (i - 1, x_t). The device and dtype follow y.
        """
        if generator is None:
            raise ValueError("pass a torch.Generator (samplers never draw from the global RNG)")
        if shape is None or y is None:
            raise ValueError("ddnm needs the measurement y and the output shape (B, C, H, W)")
        self.check_task(op)
        device, dtype = y.device, y.dtype if y.is_floating_point() else dtype
        if self.patch_size is not None:
            model = PatchedModel(model, self.patch_size, self.patch_stride)
        n = len(self.visits)
        if start is None:
            first_index, x = n - 1, randn(shape, generator, device, dtype)
        else:
            first_index, x = start[0], start[1].to(device, dtype)
            i, j = self.visits[n - 1 - first_index]
            if j > i:
                raise ValueError(f"ddnm cannot resume at visit index {first_index}: it is a time-travel visit")
        x0_t = x0_hat = x
        for k in tqdm(range(n - 1 - first_index, n), desc=self.name, leave=False, disable=not progress,
                      total=n, initial=n - 1 - first_index):
            i, j = self.visits[k]
            if j > i:  # x0_hat stays the latest x0_ddnm, the estimate a callback shows
                x = self.travel(x0_t, j, generator)
            else:
                x, x0_t, x0_hat = self.denoise(model, x, i, j, op, y.to(dtype), sigma, generator)
            self._check_finite(x, x0_hat, i)
            resumable = k == n - 1 or self.visits[k + 1][1] < self.visits[k + 1][0]
            if callback is not None and resumable:
                callback(n - 1 - k, x, x0_hat)
        return x
