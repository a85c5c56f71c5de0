"""RED-diff: regularization by denoising diffusion (Mardani et al., "A Variational Perspective on
Solving Inverse Problems with Diffusion Models", ICLR 2024, arXiv 2305.04391), as the official code
(NVlabs/RED-diff@66482f2, algos/reddiff.py) runs it.

Not a sampling chain: one Adam step per visited timestep on a single image mu (the mean of a Dirac
variational distribution), on the paper's loss (data term + score-matching regulariser) as the
code writes it, per image:
  x0_pred = mu + sigma_x0 z0,   x_t = sqrt(abar_t) x0_pred + sqrt(1 - abar_t) z       (L64-68)
  loss    = w_t mean(sg(eps(x_t, t) - z) * x0_pred) + obs_weight mean((y - A(x0_pred))^2) / 2
  w_t     = lambda_ weight(sqrt(1 - abar_t) / sqrt(abar_t))                             (L84-111)
whose gradient in mu is (w_t / D) (eps - z) - (obs_weight / M) J_A^T (y - A x0_pred), D the pixel
count and M the measurement's entry count (no gradient through the network; no clamp anywhere).
Visited timesteps: range(0, T, T // steps), high to low (steps = 20: 950, ..., 50, 0; t = 999 is
never visited; steps not dividing T visit len(range(...)) > steps timesteps). Start mu_0 = A^+ y.
Paper vs code: the paper weighs the data term by 1 / (2 sigma_v^2) and sums; the code takes means
with a 1/2 and never reads the noise level (sigma_y), which Adam's elementwise normalisation makes
matter only through its eps (1e-8). Adam's betas are (0.9, 0.99) ("original: 0.999", L52).
Output: x0_pred of the last iteration (mu before the last Adam step, plus sigma_x0 z0), not the
final mu (main.py:110 keeps the first value `sample` returns).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model, get_named_beta_schedule, randn_like

from .base import Callback, Sampler, register
from .params import Param

ADAM_EPS = 1e-8
# The code's denoise_term_weight choices, functions of snr_inv = sqrt(1 - abar_t) / sqrt(abar_t) (L92-105).
WEIGHTS: Dict[str, Callable[[float], float]] = {
    "linear": lambda r: r,
    "sqrt": math.sqrt,
    "square": lambda r: r * r,
    "log": lambda r: math.log(r + 1.0),
    "trunc_linear": lambda r: min(r, 1.0),
    "power2over3": lambda r: r ** (2 / 3),
    "const": lambda r: 1.0,
}


def reddiff_timesteps(steps: int, num_train_timesteps: int = 1000) -> List[int]:
    """Training timesteps the code visits, ascending: range(0, T, T // steps) (utils/functions.py
    L20-23, start_step T, end_step 0)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"RED-diff needs 1 <= steps <= {num_train_timesteps}, got {steps}")
    return list(range(0, num_train_timesteps, num_train_timesteps // steps))


def adam_step(mu: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
              lr: float, betas: Sequence[float], eps: float = ADAM_EPS) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step (Kingma & Ba 2015, Alg. 1) in torch.optim.Adam's arithmetic (single-tensor path,
    no weight decay): m = lerp(m, g, 1 - b1), v = b2 v + (1 - b2) g^2,
    mu -= lr / (1 - b1^s) m / (sqrt(v) / sqrt(1 - b2^s) + eps), s = step (1 for the first).
    Returns the new (mu, m, v); the inputs are not modified."""
    beta1, beta2 = betas
    exp_avg = exp_avg.lerp(grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq.mul(beta2).addcmul(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add(eps)
    return mu.addcdiv(exp_avg, denom, value=-lr / (1 - beta1 ** step)), exp_avg, exp_avg_sq


@register("reddiff")
class REDDiff(Sampler):
    """RED-diff over the shared loop; the state is (mu, Adam's m, Adam's v) stacked on channels.

    lr: Adam's step size (code: 0.1 default, 0.25 inpainting, 0.5 deblurring and the nonlinear
    tasks); lambda_: the code's grad_term_weight (0.25); obs_weight: weight of the data term (1);
    weight_type: the code's denoise_term_weight (`WEIGHTS`, 'linear' = SNR^-1/2); sigma_x0: std of the
    perturbation of mu (0; 1e-4 in the inpainting recipe); adam_betas: (0.9, 0.99).
    `sample` returns the last x0_pred, (B, C, H, W), not clamped; `callback(i, state, x0_pred)` sees
    the (B, 3C, H, W) state, which `start` resumes exactly (Adam's moments included).
    `sigma` is not used (the code never reads the noise level).
    """

    param_specs = {"lr": Param(float, low=0.0, low_open=True), "lambda_": Param(float, low=0.0),
                   "obs_weight": Param(float, low=0.0), "weight_type": Param(str, choices=tuple(WEIGHTS)),
                   "sigma_x0": Param(float, low=0.0), "adam_betas": Param(float, low=0.0, high=1.0, length=2)}

    def __init__(self, lr: float = 0.1, lambda_: float = 0.25, obs_weight: float = 1.0, weight_type: str = "linear",
                 sigma_x0: float = 0.0, adam_betas: Sequence[float] = (0.9, 0.99), steps: int = 50,
                 schedule: str = "linear", num_train_timesteps: int = 1000, **kwargs: Any):
        if "timestep_respacing" in kwargs:
            raise ValueError("reddiff visits range(0, T, T // steps); timestep_respacing is not used")
        if weight_type not in WEIGHTS:
            raise ValueError(f"weight_type must be one of {', '.join(WEIGHTS)}, got {weight_type!r}")
        if len(adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {adam_betas!r}")
        self.lr, self.lambda_, self.obs_weight = float(lr), float(lambda_), float(obs_weight)
        self.weight_type, self.sigma_x0, self.adam_betas = weight_type, float(sigma_x0), tuple(map(float, adam_betas))
        super().__init__(steps=steps, schedule=schedule, num_train_timesteps=num_train_timesteps, **kwargs)
        self.timesteps = reddiff_timesteps(self.steps, num_train_timesteps)
        self.diffusion = GaussianDiffusion.respaced(get_named_beta_schedule(schedule, num_train_timesteps),
                                                    self.timesteps)

    def check_task(self, op: Any) -> None:
        if op is None or not getattr(op, "is_linear", False):
            name = "no operator" if op is None else repr(getattr(op, "name", "") or type(op).__name__)
            raise ValueError(f"reddiff starts from mu_0 = A^+ y, which needs a linear operator; got {name}")

    def weight(self, i: int) -> float:
        """w_t = lambda_ weight(sqrt(1 - abar_t) / sqrt(abar_t)) at grid index i."""
        ac = self.diffusion.alphas_cumprod[i].item()
        return self.lambda_ * WEIGHTS[self.weight_type](math.sqrt(1 - ac) / math.sqrt(ac))

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(mu_0, 0, 0) with mu_0 = A^+ y (reddiff.py initialize, L132-141: no noise)."""
        self.check_task(op)
        mu = op.pinv(y).to(device, dtype).reshape(shape)
        return torch.cat([mu, torch.zeros_like(mu), torch.zeros_like(mu)], dim=1)

    def gradient(self, op: Any, y: torch.Tensor, x0_pred: torch.Tensor, eps_minus_z: torch.Tensor,
                 w_t: float) -> torch.Tensor:
        """d loss / d mu, loss summed over the images of per-image means (so a batch of B gives each
        image the gradient of a batch of one; the code takes the means over the whole batch)."""
        with torch.enable_grad():
            x = x0_pred.detach().requires_grad_(True)
            obs = (y - op.forward(x)).pow(2).flatten(1).mean(dim=1) / 2
            noise = (eps_minus_z * x).flatten(1).mean(dim=1)
            (grad,) = torch.autograd.grad((w_t * noise + self.obs_weight * obs).sum(), x)
        return grad

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        """One Adam step from grid index t on the state (mu, m, v); returns (new state, x0_pred)."""
        mu, exp_avg, exp_avg_sq = x_t.chunk(3, dim=1)
        i = int(t[0])
        x0_pred = mu + self.sigma_x0 * randn_like(mu, generator) if self.sigma_x0 > 0 else mu
        z = randn_like(mu, generator)
        noisy = self.diffusion.q_sample(x0_pred, t, noise=z)
        with torch.no_grad():
            eps = self.diffusion.p_mean_variance(model, noisy, t, clip_denoised=False)["eps"]
        grad = self.gradient(op, y, x0_pred, eps - z, self.weight(i))
        mu, exp_avg, exp_avg_sq = adam_step(mu, grad, exp_avg, exp_avg_sq, self.diffusion.num_timesteps - i,
                                            self.lr, self.adam_betas)
        return torch.cat([mu, exp_avg, exp_avg_sq], dim=1), x0_pred

    def sample(self, model: Model, op: Any = None, y: Optional[torch.Tensor] = None, sigma: float = 0.0,
               shape: Optional[Sequence[int]] = None, generator: Optional[Generators] = None,
               callback: Optional[Callback] = None, progress: bool = False,
               device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
               start: Optional[Tuple[int, torch.Tensor]] = None) -> torch.Tensor:
        """The shared loop over the visited timesteps; returns the last iteration's x0_pred."""
        last: List[torch.Tensor] = []

        def keep(i: int, state: torch.Tensor, x0_pred: torch.Tensor) -> None:
            last[:] = [x0_pred]
            if callback is not None:
                callback(i, state, x0_pred)

        super().sample(model, op, y, sigma=sigma, shape=shape, generator=generator, callback=keep,
                       progress=progress, device=device, dtype=dtype, start=start)
        return last[0]
