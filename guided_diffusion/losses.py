"""The ADM training objective: L_simple (Ho et al. 2020, eq. 14) and, for a model that learns its
variances, the hybrid L_simple + lambda L_vlb of Nichol & Dhariwal 2021 ("Improved DDPM", eq. 16).

Every schedule quantity (q(x_t | x_0), the posterior, the learned-range variance) comes from
`GaussianDiffusion`; this module adds only the two likelihood terms and their combination.
Per-image terms are means over C x H x W; the variational terms are in bits per dimension.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
from torch.special import log_ndtr

from .diffusion import GaussianDiffusion

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# lambda of L_hybrid (Improved DDPM, Sec. 3.1).
VLB_WEIGHT = 0.001
# Data are 8-bit: 256 levels spread over [-1, 1], so neighbouring levels are 2/255 apart.
BIN_HALF_WIDTH = 1.0 / 255.0
# Floor of a bin's mass relative to Phi(upper edge), before the log.
MIN_MASS_RATIO = 1e-12


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.dim())))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats; arguments broadcast."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log-probability of the 8-bit level x under N(mean, e^(2 log_scale)) (Ho et al. eq. 13).

    x: levels -1 + 2k/255 (k = 0..255) in [-1, 1]; each level owns the interval x +- 1/255, the
    lowest extended to -inf and the highest to +inf, so the 256 probabilities sum to 1.
    """
    inv_scale = torch.exp(-log_scale)
    upper = (x - mean + BIN_HALF_WIDTH) * inv_scale
    lower = (x - mean - BIN_HALF_WIDTH) * inv_scale
    log_cdf_upper, log_cdf_lower = log_ndtr(upper), log_ndtr(lower)
    # log(Phi(u) - Phi(l)) = log Phi(u) + log(1 - exp(log Phi(l) - log Phi(u))): log-CDFs stay
    # accurate in both tails, where Phi underflows to 0 or rounds to 1 and the plain difference
    # loses every digit. The floor only keeps the log finite where both log-CDFs round equal.
    log_mass = log_cdf_upper + torch.log((-torch.expm1(log_cdf_lower - log_cdf_upper)).clamp_min(MIN_MASS_RATIO))
    return torch.where(x < -1 + BIN_HALF_WIDTH, log_cdf_upper,
                       torch.where(x > 1 - BIN_HALF_WIDTH, log_ndtr(-lower), log_mass))


def vlb_terms(diffusion: GaussianDiffusion, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
              eps: torch.Tensor, var_values: torch.Tensor) -> torch.Tensor:
    """(B,) per-image L_t in bits/dim (Improved DDPM eq. 4-6, indices on this diffusion's grid):
    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, -log p(x_0 | x_1) discretized for t = 0.

    x0, x_t, eps, var_values: (B, C, H, W); x0 in [-1, 1] on the 8-bit levels. p's mean is
    built from eps as given and its variance from var_values (learned range, eq. 15); the
    caller decides which of them carry gradients.
    """
    true_mean, _, true_log_var = diffusion.q_posterior(x0, x_t, t)
    # p_mean_variance makes its own model call; hand it the outputs already computed.
    out = diffusion.p_mean_variance(lambda x, s: torch.cat([eps, var_values], dim=1), x_t, t,
                                    clip_denoised=False, var_type="learned_range")
    kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


def uniform_timesteps(diffusion: GaussianDiffusion, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch,) long indices drawn uniformly from 0..T-1 on the generator's device."""
    return torch.randint(0, diffusion.num_timesteps, (batch,), generator=generator, device=generator.device)


def training_losses(diffusion: GaussianDiffusion, model: Model, x0: torch.Tensor, t: torch.Tensor,
                    noise: torch.Tensor, vlb_weight: float = VLB_WEIGHT) -> Dict[str, torch.Tensor]:
    """Per-image (B,) loss terms for x0: (B, C, H, W) in [-1, 1], t: (B,) grid indices, noise ~ N(0, I).

    "mse" = ||eps - eps_theta(x_t, t)||^2 / (CHW), L_simple. A model with 2C output channels
    learns its variances and also gets "vlb" (bits/dim) and "loss" = mse + lambda T vlb: under
    uniform t, T L_t is an unbiased estimate of L_vlb = sum_t L_t (eq. 4), so this is eq. 16.
    (With T = 1000 it equals ADM's "rescaled" hybrid loss, mse + vlb T / 1000.) The VLB sees the
    mean through a stop-gradient (Sec. 3.1): the variance head learns only from L_vlb, the
    eps head only from L_simple. Without learned variances "loss" is the mse.
    """
    x_t = diffusion.q_sample(x0, t, noise)
    out = model(x_t, diffusion.model_t(t)).to(x0.dtype)
    c = x0.shape[1]
    eps = out[:, :c]
    mse = mean_flat((noise - eps) ** 2)
    if out.shape[1] == c:
        return {"mse": mse, "loss": mse}
    if out.shape[1] != 2 * c:
        raise ValueError(f"model returned {out.shape[1]} channels for a {c}-channel input (expected {c} or {2 * c})")
    vlb = vlb_terms(diffusion, x0, x_t, t, eps.detach(), out[:, c:])
    return {"mse": mse, "vlb": vlb, "loss": mse + vlb_weight * diffusion.num_timesteps * vlb}
