"""The diffusion core every sampler shares: schedules, respacing, x0/eps algebra and reverse steps.

One `GaussianDiffusion` owns every schedule quantity (Ho et al. 2020 notation: betas, alphas,
alphas_cumprod = abar_t, the posterior q(x_{t-1} | x_t, x_0)), computed in float64 and gathered in
the dtype of the tensor they multiply. A respaced diffusion keeps a subset of the training steps
(guided-diffusion's semantics: "1000", "250", "ddim100", "10,15,20") with betas recomputed so that
alphas_cumprod is unchanged at the kept steps, and `timestep_map` sends its indices back to the
training grid, which is what the model is called with.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generators = Union[torch.Generator, Sequence[torch.Generator]]
VAR_TYPES = ("learned_range", "fixed_small", "fixed_large")


def get_named_beta_schedule(name: str, num_timesteps: int) -> torch.Tensor:
    """float64 betas of a named schedule: "linear" (1e-4..0.02 scaled to num_timesteps) or "cosine"."""
    if name == "linear":
        # Ho et al.'s range for 1000 steps, stretched so other lengths keep the same total noise.
        scale = 1000.0 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    if name == "cosine":
        # Nichol & Dhariwal 2021, eq. 17, with betas capped at 0.999.
        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
                 for i in range(num_timesteps)]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {name!r}; known: linear, cosine")


# The continuous VP-SDE whose discretisation is the linear schedule: beta(s) = VP_BETA_MIN + s VP_BETA_D
# for s in [0, 1] (T beta_i runs from 0.1 to 20 for any length T), abar(s) = exp(-int_0^s beta).
VP_BETA_MIN, VP_BETA_D = 0.1, 19.9


def vp_timestep(sigma: torch.Tensor, num_timesteps: int = 1000) -> torch.Tensor:
    """The float model timestep (T - 1) s at which the continuous linear VP-SDE has noise-to-signal
    ratio sqrt(1 - abar) / sqrt(abar) = sigma: VP_BETA_MIN s + VP_BETA_D s^2 / 2 = log(1 + sigma^2)
    (EDM's VPPrecond, Karras et al. 2022, Table 1). Not rounded: sigma 100 -> 956.15, 0.01 -> 0.92."""
    s = ((VP_BETA_MIN ** 2 + 2 * VP_BETA_D * torch.log1p(sigma ** 2)).sqrt() - VP_BETA_MIN) / VP_BETA_D
    return (num_timesteps - 1) * s


def vp_alphas_cumprod(t: torch.Tensor, num_timesteps: int = 1000) -> torch.Tensor:
    """abar of the continuous linear VP-SDE at float model timesteps t (the inverse of `vp_timestep`:
    abar = 1 / (1 + sigma^2))."""
    s = t / (num_timesteps - 1)
    return torch.exp(-(VP_BETA_MIN * s + VP_BETA_D * s ** 2 / 2))


def space_timesteps(num_timesteps: int, section_counts: Union[str, Sequence[int]]) -> Set[int]:
    """Which training steps a respaced diffusion keeps (guided-diffusion's `timestep_respacing`).

    "ddimN": the evenly strided set range(0, T, stride) with exactly N elements. Otherwise the steps
    are cut into len(section_counts) near-equal sections and section i keeps section_counts[i]
    evenly spaced steps, rounding fractional positions: "250" keeps 250 steps spread over all T.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            count = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == count:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {count} evenly strided steps from {num_timesteps}")
        section_counts = [int(s) for s in section_counts.split(",")]
    n_sections = len(section_counts)
    size_per, extra = divmod(num_timesteps, n_sections)
    kept: List[int] = []
    start = 0
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 0 < count <= size:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * stride) for j in range(count)]
        start += size
    return set(kept)


def _gather(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[t] shaped (B, 1, ..., 1) for broadcasting against `like`, in like's dtype and device."""
    vals = arr.to(like.device)[t.to(like.device)].to(like.dtype)
    return vals.reshape(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """Schedule quantities and the Gaussian algebra of DDPM/DDIM on a (possibly respaced) grid.

    Indices t given to the methods live on this diffusion's own grid, 0..num_timesteps-1;
    `model_t(t)` converts them to training-grid timesteps for the model.
    """

    def __init__(self, betas: torch.Tensor, timestep_map: Optional[Sequence[int]] = None):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = torch.as_tensor(
            list(range(self.num_timesteps)) if timestep_map is None else list(timestep_map), dtype=torch.long)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance)   (Ho et al. eq. 6-7)
        ac, ac_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        # The t = 0 posterior variance is 0; its log is clipped to the t = 1 value (to beta_0 when
        # the grid has a single step: the value then only enters learned-range interpolation).
        first = self.posterior_variance[1:2] if self.num_timesteps > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * ac_prev.sqrt() / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * self.alphas.sqrt() / (1.0 - ac)

    @classmethod
    def from_config(cls, schedule: str = "linear", num_train_timesteps: int = 1000,
                    timestep_respacing: Union[str, Sequence[int], None] = None) -> "GaussianDiffusion":
        """The training schedule, respaced when `timestep_respacing` is given ("250", "ddim50", ...)."""
        betas = get_named_beta_schedule(schedule, num_train_timesteps)
        if timestep_respacing in (None, "", str(num_train_timesteps)):
            return cls(betas)
        return cls.respaced(betas, space_timesteps(num_train_timesteps, timestep_respacing))

    @classmethod
    def respaced(cls, train_betas: torch.Tensor, use_timesteps: Iterable[int]) -> "GaussianDiffusion":
        """Keep `use_timesteps` of the training grid; beta_i = 1 - abar_{k_i} / abar_{k_{i-1}}."""
        keep = sorted(set(int(k) for k in use_timesteps))
        train_ac = torch.cumprod(1.0 - torch.as_tensor(train_betas, dtype=torch.float64), 0)
        if not keep or keep[0] < 0 or keep[-1] >= len(train_ac):
            raise ValueError(f"timesteps to keep must lie in [0, {len(train_ac)})")
        ac = train_ac[keep]
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        return cls(1.0 - ac / ac_prev, timestep_map=keep)

    # ---- conversions --------------------------------------------------------------------------
    def model_t(self, t: torch.Tensor) -> torch.Tensor:
        """Training-grid timesteps for the model, from indices on this grid."""
        return self.timestep_map.to(t.device)[t]

    def timesteps(self, batch: int, i: int, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
        """A (batch,) long tensor filled with grid index i."""
        return torch.full((batch,), i, dtype=torch.long, device=device)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    # ---- forward process ----------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None,
                 generator: Optional[Generators] = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I)."""
        if noise is None:
            noise = randn_like(x0, generator)
        return _gather(self.sqrt_alphas_cumprod, t, x0) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x0 + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _gather(self.posterior_variance, t, x_t), _gather(self.posterior_log_variance_clipped, t, x_t)

    # ---- reverse process ----------------------------------------------------------------------
    def model_log_variance(self, t: torch.Tensor, like: torch.Tensor, var_type: str,
                           var_values: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log sigma_t^2 of the reverse step.

        learned_range: interpolate log beta_t and the clipped log posterior variance with
        frac = (v + 1) / 2 (Nichol & Dhariwal eq. 15), v the model's extra channels.
        fixed_small: the posterior variance; fixed_large: beta_t (t = 0 uses the posterior's t = 1).
        """
        if var_type == "learned_range":
            if var_values is None:
                raise ValueError("learned_range needs a model with 2C output channels")
            frac = (var_values + 1) / 2
            return frac * _gather(self.betas.log(), t, like) + (1 - frac) * _gather(self.posterior_log_variance_clipped, t, like)
        if var_type == "fixed_small":
            return _gather(self.posterior_log_variance_clipped, t, like).expand_as(like)
        if var_type == "fixed_large":
            large = torch.cat([self.posterior_variance[1:2], self.betas[1:]]).log()
            return _gather(large, t, like).expand_as(like)
        raise ValueError(f"unknown variance type {var_type!r}; known: {VAR_TYPES}")

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        var_type: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """One model call: eps, x0_hat (clamped to [-1, 1] when `clip_denoised`), the mean of
        p(x_{t-1} | x_t) = q(x_{t-1} | x_t, x0_hat) and its log-variance.

        `var_type` None picks learned_range for a 2C-channel output and fixed_small otherwise.
        The clamp stays inside the autograd graph (DPS differentiates through it).
        """
        out = model(x_t, self.model_t(t))
        c = x_t.shape[1]
        if out.shape[1] == 2 * c:
            eps, var_values = out.split(c, dim=1)
        elif out.shape[1] == c:
            eps, var_values = out, None
        else:
            raise ValueError(f"model returned {out.shape[1]} channels for a {c}-channel input (expected {c} or {2 * c})")
        var_type = var_type or ("learned_range" if var_values is not None else "fixed_small")
        x0_hat = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0_hat, x_t, t)
        log_variance = self.model_log_variance(t, x_t, var_type, var_values)
        return {"eps": eps, "x0_hat": x0_hat, "mean": mean, "log_variance": log_variance}

    def ddpm_step(self, mean: torch.Tensor, log_variance: torch.Tensor, t: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
        """Ancestral step x_{t-1} = mean + exp(log_var / 2) noise, with no noise where t = 0."""
        nonzero = (t != 0).to(mean.dtype).reshape(-1, *([1] * (mean.dim() - 1)))
        return mean + nonzero * torch.exp(0.5 * log_variance) * noise

    def ddim_step(self, x0_hat: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, eta: float,
                  noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12): x_{t-1} = sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s n,
        s = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar'), abar' = abar_{t-1}."""
        ac, ac_prev = _gather(self.alphas_cumprod, t, x0_hat), _gather(self.alphas_cumprod_prev, t, x0_hat)
        sigma = eta * ((1 - ac_prev) / (1 - ac)).sqrt() * (1 - ac / ac_prev).sqrt()
        x_prev = ac_prev.sqrt() * x0_hat + (1 - ac_prev - sigma ** 2).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            nonzero = (t != 0).to(x0_hat.dtype).reshape(-1, *([1] * (x0_hat.dim() - 1)))
            x_prev = x_prev + nonzero * sigma * noise
        return x_prev


def randn(shape: Sequence[int], generator: Generators, device: Union[str, torch.device, None] = None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape`, from an explicit generator (never the global RNG).

    `generator` is one torch.Generator for the whole batch, or one per image (a sequence of
    length shape[0]); with one per image, image k's noise does not depend on what else is in the
    batch, so batched runs reproduce image-by-image runs. Noise is drawn on the generator's
    device and moved to `device`.
    """
    if generator is None:
        raise ValueError("pass a torch.Generator: no randomness is drawn from the global RNG")
    if isinstance(generator, torch.Generator):
        noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        noise = torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype)
                             for g in generator])
    return noise.to(device) if device is not None else noise


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """`randn` shaped like x, on x's device and in x's dtype."""
    return randn(x.shape, generator, x.device, x.dtype)
