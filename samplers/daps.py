"""DAPS: Decoupled Annealing Posterior Sampling (Zhang et al., "Improving Diffusion Inverse Problem
Solving with Decoupled Noise Annealing", CVPR 2025, arXiv 2407.01521), as the official code
(zhangbingliang2019/DAPS@098df6b, sampler.py DAPS.sample L42-98, pixel space) runs it.

States are variance-exploding, x_t = x_0 + sigma n. The ADM eps-network becomes an EDM denoiser
through the continuous VP-SDE of its linear schedule (model/precond.py VPPrecond L42-72):
  D(x, u) = x - u eps(x / sqrt(1 + u^2), vp_timestep(u)),   a float timestep, never rounded.
Annealing over sigma_k, k = 0..N-1 (EDM poly-rho grid from sigma_max towards sigma_min, whose last
point sigma_min is dropped and 0 appended, cores/scheduler.py L38-44, L272-315). Step k, s = sigma_k:
  1. x0_hat: the probability-flow ODE dx/du = (x - D(x, u)) / u from u = s down to ode_sigma_min,
     `ode_steps` Euler steps on the poly-rho grid; x0_hat is the Euler state at ode_sigma_min (no
     final denoiser call);
  2. x0_y: `langevin_steps` Langevin steps on x0 (cores/mcmc.py L37-50, L88, L123-164)
       x <- x + lr_k (-grad ||A(x) - y||^2 / tau^2 + (x0_hat - x) / s^2) + sqrt(2 lr_k) eps,
     from x = x0_hat, lr_k = lr (1 + (k / (N + 1)) (lr_min_ratio - 1)): the paper's Langevin step with
     p(x0 | x_t) ~ N(x0_hat, r_t^2 I), r_t = s, and a likelihood of std tau / sqrt(2) (the squared norm
     without 1/2; tau is fixed, not the measurement's sigma);
  3. re-noise: x_{k+1} = x0_y + sigma_{k+1} z (sigma_N = 0: the output is the last x0_y, not clamped).
Start: x = sigma_max n. Draws per step: the Langevin noises in order, then z (none at the last step).
The code returns zeros for an image whose Langevin iterate turns NaN (mcmc.py L158-159); here the
shared loop stops with a NonFiniteError naming the step.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from guided_diffusion.diffusion import Generators, Model, randn, randn_like, vp_timestep

from .base import Sampler, register
from .params import Param


def poly_sigmas(sigma_max: float, sigma_min: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """EDM's poly-rho grid (Karras et al. 2022, eq. 5), steps + 1 points from sigma_max to sigma_min:
    (sigma_max^(1/rho) + (i / steps) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, float64."""
    ramp = np.linspace(0.0, 1.0, steps + 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def annealing_sigmas(sigma_max: float, sigma_min: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """sigma_0..sigma_{N-1} of the annealing and a final 0: the poly-rho grid without its last point
    (the code stores N + 1 points and discretises the first N), N = steps. N = 5: 100, 39.129,
    13.237, 3.6696, 0.76185, 0; the last step runs at 0.762, never at sigma_min = 0.1."""
    return np.append(poly_sigmas(sigma_max, sigma_min, steps, rho)[:-1], 0.0)


@register("daps")
class DAPS(Sampler):
    """DAPS over the shared loop: one annealing step per grid index (steps = N annealing steps).

    ode_steps: Euler steps of each x0_hat solve (5); langevin_steps: Langevin steps per annealing step
    (100; 10 in the golden files); sigma_max / sigma_min / rho: the annealing grid (100, 0.1, 7);
    ode_sigma_min: where each ODE solve stops (0.01); lr, lr_min_ratio: the Langevin step size and its
    linear decay (per task, configs/daps); tau: the likelihood's scale (0.01). Defaults: DAPS-1K
    (200 x 5 network calls, 100 Langevin steps each annealing step). Network calls per image:
    steps x ode_steps; operator gradients: steps x langevin_steps. `sigma` is not used (tau is).
    Needs a differentiable operator (linear or not); a model trained on the linear schedule.
    """

    param_specs = {"ode_steps": Param(int, low=1), "langevin_steps": Param(int, low=0),
                   "sigma_max": Param(float, low=0.0, low_open=True), "sigma_min": Param(float, low=0.0, low_open=True),
                   "ode_sigma_min": Param(float, low=0.0, low_open=True), "rho": Param(float, low=0.0, low_open=True),
                   "lr": Param(float, low=0.0, low_open=True), "lr_min_ratio": Param(float, low=0.0, high=1.0),
                   "tau": Param(float, low=0.0, low_open=True)}

    def __init__(self, steps: int = 200, ode_steps: int = 5, langevin_steps: int = 100, sigma_max: float = 100.0,
                 sigma_min: float = 0.1, ode_sigma_min: float = 0.01, rho: float = 7.0, lr: float = 1e-4,
                 lr_min_ratio: float = 0.01, tau: float = 0.01, schedule: str = "linear",
                 num_train_timesteps: int = 1000, **kwargs: Any):
        if "timestep_respacing" in kwargs:
            raise ValueError("daps anneals over sigma (sigma_max, sigma_min, steps); timestep_respacing is not used")
        if schedule != "linear":
            raise ValueError(f"daps maps the network to a denoiser through the linear schedule's VP-SDE; "
                             f"schedule {schedule!r} is not supported")
        if not ode_sigma_min < sigma_min < sigma_max:
            raise ValueError(f"daps needs ode_sigma_min < sigma_min < sigma_max, got "
                             f"{ode_sigma_min:g}, {sigma_min:g}, {sigma_max:g}")
        self.ode_steps, self.langevin_steps = int(ode_steps), int(langevin_steps)
        self.sigma_max, self.sigma_min, self.ode_sigma_min, self.rho = sigma_max, sigma_min, ode_sigma_min, rho
        self.lr, self.lr_min_ratio, self.tau = float(lr), float(lr_min_ratio), float(tau)
        super().__init__(steps=steps, schedule=schedule, num_train_timesteps=num_train_timesteps, **kwargs)
        self.num_train_timesteps = num_train_timesteps
        self.sigmas = annealing_sigmas(sigma_max, sigma_min, self.steps, rho)

    @property
    def nfe(self) -> int:
        """Network calls per image."""
        return self.steps * self.ode_steps

    def step_label(self, i: int) -> str:
        k = self.steps - 1 - i
        return f"annealing step {k + 1} of {self.steps} (sigma = {float(self.sigmas[k]):.4g})"

    def check_task(self, op: Any) -> None:
        if op is None:
            raise ValueError("daps needs a measurement operator (its Langevin step follows grad ||A(x) - y||^2)")

    def langevin_lr(self, k: int) -> float:
        """lr_k of annealing step k = 0..N-1: lr (1 + (k / (N + 1)) (lr_min_ratio - 1)) (mcmc.py get_lr
        L174-180 with the scheduler's num_steps = N + 1: lr_min_ratio lr is never reached)."""
        return self.lr * (1 + k / (self.steps + 1) * (self.lr_min_ratio - 1))

    def denoise(self, model: Model, x: torch.Tensor, u: float) -> torch.Tensor:
        """D(x, u) = x - u eps(x / sqrt(1 + u^2), vp_timestep(u)) (EDM VPPrecond: c_skip 1, c_out -u,
        c_in 1 / sqrt(1 + u^2)); the eps half of a learned-variance output."""
        t = vp_timestep(torch.full((x.shape[0],), u, dtype=torch.float64), self.num_train_timesteps)
        eps = model(x / math.sqrt(1 + u * u), t.to(x.device, x.dtype))[:, :x.shape[1]]
        return x - u * eps

    def ode_x0(self, model: Model, x_t: torch.Tensor, sigma: float) -> torch.Tensor:
        """x0_hat: Euler steps of dx/du = (x - D(x, u)) / u on the poly-rho grid from sigma to
        ode_sigma_min (the EDM probability-flow ODE, Karras et al. 2022, eq. 4 with s(t) = 1)."""
        grid = poly_sigmas(sigma, self.ode_sigma_min, self.ode_steps, self.rho)
        x = x_t
        with torch.no_grad():
            for u, u_next in zip(grid[:-1], grid[1:]):
                x = x + (u_next - u) * (x - self.denoise(model, x, u)) / u
        return x

    def measurement_gradient(self, op: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad_x of sum over images of ||A(x) - y||^2 (the code's Operator.loss / gradient)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((op.forward(x) - y).pow(2).sum(), x)
        return grad

    def langevin(self, op: Any, y: torch.Tensor, x0_hat: torch.Tensor, sigma: float, lr: float,
                 generator: Generators) -> torch.Tensor:
        """x0_y: Langevin dynamics on exp(-||A(x) - y||^2 / tau^2 - ||x - x0_hat||^2 / (2 sigma^2)) from x0_hat."""
        x = x0_hat
        for _ in range(self.langevin_steps):
            score = -self.measurement_gradient(op, x, y) / self.tau ** 2 + (x0_hat - x) / sigma ** 2
            x = x + lr * score + math.sqrt(2 * lr) * randn_like(x, generator)
        return x

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """x = sigma_max n (sampler.py get_start L121-135)."""
        return self.sigmas[0] * randn(shape, generator, device, dtype)

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        """Annealing step k = N - 1 - t: (x_{k+1}, x0_y)."""
        k = self.steps - 1 - int(t[0])
        s, s_next = float(self.sigmas[k]), float(self.sigmas[k + 1])
        x0_hat = self.ode_x0(model, x_t, s)
        x0_y = self.langevin(op, y, x0_hat, s, self.langevin_lr(k), generator)
        if s_next == 0:
            return x0_y, x0_y
        return x0_y + s_next * randn_like(x0_y, generator), x0_y
