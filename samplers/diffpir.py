"""DiffPIR: Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu et al., CVPRW 2023,
arXiv 2305.08995), as the official code (yuanzhi-zhu/DiffPIR, main_ddpir_*.py) runs it.

Half-quadratic splitting of min_x 1/(2 sigma_n^2) ||y - A x||^2 + lambda P(x) with the diffusion
model as the prior step and the penalty tied to the diffusion noise level
sigma_bar_t = sqrt(1 - abar_t) / sqrt(abar_t). Per visited step t -> t':
  1. prior step:  x0 = clipped x0_hat(x_t) of the model (one NFE);
  2. data step:   x0 <- argmin_x ||y - A x||^2 + rho_t ||x - x0||^2,  rho_t = lambda sigma_n^2 / sigma_bar_t^2
                  (`op.prox`, closed form for circular blur, blur + decimation, inpainting);
  3. re-noise:    eps_hat = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) from the *updated* x0, then
                  x_t' = sqrt(abar_t') x0 + sqrt(1 - zeta) (sqrt(1 - abar_t' - s^2) eps_hat + s n1)
                         + sqrt(zeta) sqrt(1 - abar_t') n2,   s = eta sqrt(1 - abar_t') / sqrt(1 - abar_t) sqrt(beta_t).
The paper's Algorithm 1 has the same three steps (the reference notes did not re-read its equation
numbers, so none are cited here).
Code details kept: the visited timesteps ('quad' / 'uniform' skip types), t_start, the
measurement-aware start, sigma_n = max(0.001, noise level) and the last step (model called, no data
step, no update). The inpainting script's final x[mask] = y[mask] runs after the image it saves and
scores (x / 2 + 0.5) was taken, so it changes nothing and is not done here.
Not implemented (off in every released script): iter_num_U > 1 inner repeats, the first-order data
step (sub_1_analytic False), SR 'cubic' mode, guidance_scale != 1, the 'pred_x_prev' variant and the
DPS/repaint baselines of main_ddpir.py.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model, get_named_beta_schedule, randn, randn_like
from operators.blur import KernelOperator
from operators.resize import bicubic_upsample

from .base import Sampler, register
from .params import Param

SKIP_TYPES = ("quad", "uniform")
SIGMA_FLOOR = 0.001  # the code: sigma = max(0.001, noise_level_img), a [0, 1]-scale std


def diffpir_timesteps(steps: int, skip_type: str, num_train_timesteps: int = 1000) -> List[int]:
    """Training timesteps the code visits, high to low: t_i = T - 1 - seq[i].

    quad: seq = int(sqrt(linspace(0, T^2, steps))) with seq[-1] -= 1 -> exactly `steps` values from
    T - 1 to 0, dense near t = 0 (20 steps: 999, 770, 675, ..., 26, 0).
    uniform: skip = T // steps, seq = [0, skip, ..., (steps - 1) skip] plus T - 1 when skip > 1 ->
    steps + 1 values (100 steps: 999, 989, ..., 9, 0). Repeated values (quad with steps > T / 2) are
    visited once.
    """
    if skip_type not in SKIP_TYPES:
        raise ValueError(f"skip_type must be one of {SKIP_TYPES}, got {skip_type!r}")
    if not 2 <= steps <= num_train_timesteps:
        raise ValueError(f"DiffPIR needs 2 <= steps <= {num_train_timesteps}, got {steps}")
    last = num_train_timesteps - 1
    if skip_type == "quad":
        seq = [int(s) for s in np.sqrt(np.linspace(0, num_train_timesteps ** 2, steps))]
        seq[-1] -= 1
    else:
        skip = num_train_timesteps // steps
        seq = [i * skip for i in range(steps)] + ([last] if skip > 1 else [])
    return sorted({last - s for s in seq}, reverse=True)


def sr_factor(y: torch.Tensor, shape: Sequence[int]) -> Optional[int]:
    """f when y is the image shrunk by an integer f > 1 on both axes ((B, C, H / f, W / f) for
    shape (B, C, H, W)): the super-resolution case, which the code starts differently. Else None."""
    if y.dim() != 4 or tuple(y.shape[:2]) != tuple(shape[:2]):
        return None
    (h, w), (height, width) = y.shape[-2:], shape[-2:]
    if height % h or width % w or height // h != width // w or height == h:
        return None
    return height // h


@register("diffpir")
class DiffPIR(Sampler):
    """DiffPIR over the shared loop; the grid is the list of visited training steps.

    lambda_: lambda of rho_t (code default per task: deblur 1.0 x 7, SR swept 2..12, inpainting 1.0);
    zeta: share of fresh noise in the re-noising (deblur 0.1 x 3, SR 0.25, inpainting 1.0);
    steps / skip_type: the code's iter_num and skip_type (NFE = steps for quad, steps + 1 for
    uniform); t_start: the step the start is noised to (code: 999, steps above it are skipped);
    eta: the code's eta (0 in every script). `sigma` given to `sample` is the measurement std on
    [-1, 1]; the code's noise_level_img is a [0, 1] std, i.e. sigma / 2.
    """

    # lambda_ > 0 keeps rho_t > 0 (a proper prox); eta <= 1 keeps s^2 <= 1 - abar_t' (beta_t <= 1 - abar_t).
    param_specs = {"lambda_": Param(float, low=0.0, low_open=True), "zeta": Param(float, low=0.0, high=1.0),
                   "skip_type": Param(str, choices=SKIP_TYPES), "t_start": Param(int, low=0, nullable=True),
                   "eta": Param(float, low=0.0, high=1.0)}

    def __init__(self, lambda_: float = 7.0, zeta: float = 0.3, steps: int = 100, skip_type: str = "quad",
                 t_start: Optional[int] = None, eta: float = 0.0, schedule: str = "linear",
                 num_train_timesteps: int = 1000, **kwargs: Any):
        if "timestep_respacing" in kwargs:
            raise ValueError("DiffPIR builds its grid from steps/skip_type/t_start; timestep_respacing is not used")
        if not 0.0 <= zeta <= 1.0:
            raise ValueError(f"zeta must be in [0, 1], got {zeta}")
        self.lambda_, self.zeta, self.eta, self.skip_type = float(lambda_), float(zeta), float(eta), skip_type
        self.t_start = num_train_timesteps - 1 if t_start is None else int(t_start)
        super().__init__(steps=steps, schedule=schedule, num_train_timesteps=num_train_timesteps, **kwargs)
        # The visited steps are not a respacing string: build the diffusion from the kept list (its
        # alphas_cumprod are the training values at those steps; alphas_cumprod_prev is abar_t').
        self.train_betas = get_named_beta_schedule(schedule, num_train_timesteps)
        self.train_alphas_cumprod = torch.cumprod(1.0 - self.train_betas, 0)
        self.timesteps = [t for t in diffpir_timesteps(self.steps, skip_type, num_train_timesteps) if t <= self.t_start]
        if not self.timesteps:
            raise ValueError(f"t_start={self.t_start} skips every step")
        self.diffusion = GaussianDiffusion.respaced(self.train_betas, self.timesteps)

    @property
    def nfe(self) -> int:
        """Model calls per image (one per visited step, the last one included, as in the code)."""
        return len(self.timesteps)

    def rho(self, i: int, sigma: float) -> float:
        """rho_t = lambda sigma_n^2 / sigma_bar_t^2 at grid index i.

        sigma_n is the code's [0, 1]-scale std, max(0.001, sigma / 2): the floor keeps rho_t > 0
        (a proper prox) for noiseless data, where the data step then nearly interpolates y
        (rho_t = 1e-6 lambda / sigma_bar_t^2: 1.0e-4 lambda at t = 26, the last data step of 20 quad steps).
        """
        ac = self.diffusion.alphas_cumprod[i].item()
        sigma_n = max(SIGMA_FLOOR, sigma / 2)
        return self.lambda_ * sigma_n ** 2 / ((1 - ac) / ac)

    def check_task(self, op: Any) -> None:
        if op is not None and not getattr(op, "is_linear", False):
            raise ValueError(f"diffpir's data step is the closed-form prox of a linear operator; "
                             f"{getattr(op, 'name', type(op).__name__)!r} is nonlinear (use dps or dpps)")

    @staticmethod
    def data_step(op: Any, x0: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
        """argmin_x ||y - A x||^2 + rho ||x - x0||^2 on the scale the code solves it, for [-1, 1]
        images x0 and y; solved in float64 and returned in x0's dtype (DPIR's data step too).

        Blur and blur + decimation (main_ddpir_deblur.py / _sisr.py): on [0, 1], x01 = (x0 + 1) / 2
        against y01 = (y + 1) / 2, mapped back by 2 x01 - 1; this is the [-1, 1] solve against
        y + 1 - A 1, i.e. y + 1 - sum k. Any other operator (inpainting, main_ddpir_inpainting.py,
        and operators the code has no script for, whose y = A x is made on [-1, 1]): on [-1, 1].
        rho is the same on both scales (both terms of the [0, 1] objective are 1/4 of the [-1, 1]
        ones). DiffPIR's x4 bicubic table kernel sums to 0.9999: solved on [-1, 1], the golden SR
        output would be 3.8e-4 off.
        float64: with rho_t as small as 4e-11 (noiseless data, t = 999) the closed forms divide a
        difference of nearly equal spectra by rho_t, so float32 loses everything (the official
        float32 code is 4e-2 off its float64 run on the golden deblur case); the solve is FFTs and
        elementwise maps, cheap next to the network call.
        """
        x0_64, y_64 = x0.to(torch.float64), y.to(torch.float64)
        if not isinstance(op, KernelOperator):
            return op.prox(x0_64, y_64, rho).to(x0.dtype)
        return (2 * op.prox((x0_64 + 1) / 2, (y_64 + 1) / 2, rho) - 1).to(x0.dtype)

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The code's start at s = t_start, from one draw n.

        SR (y is a smaller image, (B, C, H / f, W / f) for an integer f > 1; main_ddpir_sisr.py):
        x = sqrt(abar_s) U(y) + sqrt(1 - abar_s) n with U the bicubic upsampling by f as OpenCV's
        INTER_CUBIC does it (`operators.resize.bicubic_upsample`; the code upsamples y01 and maps
        2 U(y01) - 1, which is U(y) since U's weights sum to 1).
        Otherwise (deblur, inpainting: y has the image shape; any other y: A^+ y):
        x = sqrt(abar_s / abar_ty) Y + sqrt(1 - abar_s - (abar_s / abar_ty)(1 - abar_ty)) n, t_y = the
        step whose sigma_bar is nearest the measurement std on [-1, 1] (the code's 2 noise_level_img,
        before the floor). With t_start = 999 the weight of y is <= 0.0064 either way.
        """
        noise = randn(shape, generator, device, dtype)
        if y is None:
            return noise
        ac = self.train_alphas_cumprod
        factor = sr_factor(y, shape)
        if factor is not None:
            ac_s = ac[self.t_start].item()
            return math.sqrt(ac_s) * bicubic_upsample(y, factor).to(dtype) + math.sqrt(1 - ac_s) * noise
        t_y = int(((1 - ac) / ac).sqrt().sub(sigma).abs().argmin())
        scale = (ac[self.t_start] / ac[t_y]).item()
        std = math.sqrt(max(1 - ac[self.t_start].item() - scale * (1 - ac[t_y].item()), 0.0))
        start = y if tuple(y.shape) == tuple(shape) else op.pinv(y)
        return math.sqrt(scale) * start.to(dtype) + std * noise

    def step(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, op: Any, y: Optional[torch.Tensor],
             sigma: float, generator: Generators) -> Tuple[torch.Tensor, torch.Tensor]:
        # 1. prior step: the model's clipped x0 prediction at sigma_bar_t (no gradient needed).
        with torch.no_grad():
            x0 = self.diffusion.p_mean_variance(model, x_t, t, self.clip_denoised, self.var_type)["x0_hat"]
        i = int(t[0])
        if i == 0:
            # Last visited step: the code calls the model but applies neither the data step nor the
            # update; its output is this x_t (carrying sqrt(1 - abar_0) = 0.01 noise), clamped when
            # written to uint8.
            return (x_t.clamp(-1, 1) if self.clip_denoised else x_t), x0
        # 2. data step.
        x0 = self.data_step(op, x0, y, self.rho(i, sigma))
        # 3. re-noise to the next visited step t' with eps_hat from the updated x0.
        eps_hat = self.diffusion.predict_eps_from_x0(x_t, t, x0)
        ac, ac_next = self.diffusion.alphas_cumprod[i].item(), self.diffusion.alphas_cumprod_prev[i].item()
        beta_t = self.train_betas[self.diffusion.timestep_map[i]].item()
        s = self.eta * math.sqrt((1 - ac_next) / (1 - ac)) * math.sqrt(beta_t)
        kept = math.sqrt(1 - ac_next - s ** 2) * eps_hat
        if s > 0:
            kept = kept + s * randn_like(x_t, generator)
        x_next = math.sqrt(ac_next) * x0 + math.sqrt(1 - self.zeta) * kept
        if self.zeta > 0:
            x_next = x_next + math.sqrt(self.zeta) * math.sqrt(1 - ac_next) * randn_like(x_t, generator)
        return x_next, x0
