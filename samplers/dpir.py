"""DPIR: Plug-and-Play Image Restoration with Deep Denoiser Prior (Zhang, Li, Zuo, Zhang, Van Gool &
Timofte, TPAMI 2021, arXiv 2008.13751), as the official code (cszn/DPIR@15bca3f, main_dpir_deblur.py,
main_dpir_sisr.py, utils/utils_pnp.py, utils/utils_sisr.py) runs it.

Half-quadratic splitting of min_x 1/(2 sigma_n^2) ||y - A x||^2 + lambda Phi(x) (paper Eq. 6-7),
on the [0, 1] scale of the code, N iterations k = 0..N-1:
  schedule  sigma_k = (w logspace(sigma_1, sigma_2)_k + (1 - w) linspace(sigma_1, sigma_2)_k) / 255,
            rho_k = lambda_ sigma_n^2 / sigma_k^2, sigma_n = max(0.255 / 255, sigma_y)   (utils_pnp.py:27-36)
  data      x <- argmin_x ||y - A x||^2 + rho_k ||x - z||^2     (closed form, `op.prox`; Eq. 7a)
  prior     z <- D(x, sigma_k)                                    (the Gaussian denoiser; Eq. 7b)
with sigma_1 = model_sigma1 (49), sigma_2 = model_sigma2 (deblur: 255 sigma_n; SR: max(sf, 255 sigma_n)),
the start z = y (deblur) or the OpenCV-bicubic upsampling of y (SR), and the last z returned.
The denoiser D is DRUNet (the image and a constant noise-level map sigma_k; the code's test_mode:
replication padding to a multiple of 16, one call, crop), or the diffusion UNet used as a Gaussian
denoiser (the DiffPIR tables' DPIR rows): its clipped x0 prediction at the training timestep whose
sqrt(1 - abar_t) / sqrt(abar_t) is nearest the noise std 2 sigma_k on [-1, 1], fed
x_t = sqrt(abar_t) (2 x - 1), i.e. x scaled as a noisy diffusion state of that level.
x8: the code's periodical geometric self-ensemble: iteration k transforms x by the k % 8-th element
of the dihedral group before D and undoes it after (one denoiser call per iteration).
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from guided_diffusion.diffusion import GaussianDiffusion, Generators, Model
from guided_diffusion.drunet import DRUNet
from operators.resize import bicubic_upsample

from .base import Callback, NonFiniteError, Sampler, register
from .diffpir import DiffPIR, sr_factor
from .params import Param
from .patches import PatchedModel

DENOISERS = ("auto", "drunet", "diffusion")
SIGMA_N_FLOOR = 0.255 / 255  # utils_pnp.py: sigma_n = max(0.255/255., noise_level_model)
DRUNET_MODULO = 16  # test_mode(mode=2, refield=32, min_size=256, modulo=16)


def dpir_schedule(steps: int, model_sigma1: float, model_sigma2: float, w: float, lambda_: float,
                  sigma_n: float) -> tuple:
    """(sigmas, rhos) as float64 lists: the noise levels sigma_k on [0, 1] (the map values) and
    the data-step weights rho_k = lambda_ sigma_n^2 / sigma_k^2."""
    log = np.logspace(np.log10(model_sigma1), np.log10(model_sigma2), steps)
    lin = np.linspace(model_sigma1, model_sigma2, steps)
    sigmas = [float(s) / 255 for s in log * w + lin * (1 - w)]
    return sigmas, [lambda_ * sigma_n ** 2 / s ** 2 for s in sigmas]


def augment(x: torch.Tensor, mode: int) -> torch.Tensor:
    """The k-th element of the dihedral group on the last two axes (the code's mode numbering:
    0 identity, 2 a flip, 3 / 5 rotations by 270 / 90 degrees, 6 by 180, 1, 4, 7 rotation + flip)."""
    rot = {0: 0, 1: 1, 2: 0, 3: 3, 4: 2, 5: 1, 6: 2, 7: 3}[mode]
    x = torch.rot90(x, rot, dims=(-2, -1))
    return x.flip(-2) if mode in (1, 2, 4, 7) else x


def augment_inverse(x: torch.Tensor, mode: int) -> torch.Tensor:
    """Undo `augment`: rotation + flip and the half turn are involutions; 3 and 5 invert each other."""
    return augment(x, 8 - mode if mode in (3, 5) else mode)


@register("dpir")
class DPIR(Sampler):
    """DPIR through the sampler interface; `sample` runs the HQS iterations.

    steps: N (code: deblur 8, SR 24); lambda_: 0.23; model_sigma1 / model_sigma2: the schedule's
    ends in [0, 255] units (None: the code's rule from sigma and the SR factor); w: log (1) vs
    linear (0) spacing; x8: periodical self-ensemble; denoiser: "drunet", "diffusion" or "auto"
    (DRUNet when the model is one, else the diffusion UNet). `self.diffusion` is the N-step grid
    only for the shared progress / resume indices; the diffusion denoiser uses the training grid.
    """

    param_specs = {"lambda_": Param(float, low=0.0, low_open=True),
                   "model_sigma1": Param(float, low=0.0, low_open=True),
                   "model_sigma2": Param(float, low=0.0, low_open=True, nullable=True),
                   "w": Param(float, low=0.0, high=1.0), "x8": Param(bool),
                   "denoiser": Param(str, choices=DENOISERS)}

    def __init__(self, steps: int = 8, lambda_: float = 0.23, model_sigma1: float = 49.0,
                 model_sigma2: Optional[float] = None, w: float = 1.0, x8: bool = False, denoiser: str = "auto",
                 schedule: str = "linear", num_train_timesteps: int = 1000, **kwargs: Any):
        if denoiser not in DENOISERS:
            raise ValueError(f"denoiser must be one of {DENOISERS}, got {denoiser!r}")
        self.lambda_, self.model_sigma1, self.model_sigma2 = float(lambda_), float(model_sigma1), model_sigma2
        self.w, self.x8, self.denoiser = float(w), bool(x8), denoiser
        super().__init__(steps=steps, schedule=schedule, num_train_timesteps=num_train_timesteps, **kwargs)
        self.train_diffusion = GaussianDiffusion.from_config(schedule, num_train_timesteps)

    def check_task(self, op: Any) -> None:
        if op is None or not getattr(op, "is_linear", False):
            what = "no operator" if op is None else f"{getattr(op, 'name', type(op).__name__)!r} is nonlinear"
            raise ValueError(f"dpir's data step is the closed-form prox of a linear operator; {what} (use dps or dpps)")

    def schedule(self, sigma: float, factor: Optional[int] = None) -> tuple:
        """(sigmas, rhos) for measurement std `sigma` on [-1, 1] (the code's noise_level_model is
        sigma / 2) and SR factor `factor` (None: not SR)."""
        sigma_n = max(SIGMA_N_FLOOR, sigma / 2)
        # The code's rule is 255 sigma_y (deblur), max(sf, 255 sigma_y) (SR); noiseless deblurring
        # would end the log schedule at 0, so the floor sigma_n stands in for sigma_y (0.255).
        top = self.model_sigma2 if self.model_sigma2 is not None else max(factor or 0, 255 * sigma_n)
        return dpir_schedule(self.steps, self.model_sigma1, float(top), self.w, self.lambda_, sigma_n)

    def denoiser_of(self, model: Model) -> Callable[[torch.Tensor, float], torch.Tensor]:
        """D(x, s): x (B, C, H, W) on [0, 1], noise std s on [0, 1] -> denoised x on [0, 1]."""
        is_drunet = isinstance(getattr(model, "module", model), DRUNet)
        kind = self.denoiser if self.denoiser != "auto" else ("drunet" if is_drunet else "diffusion")
        if (kind == "drunet") != is_drunet:
            raise ValueError(f"dpir: denoiser {kind!r} but the model is {'a DRUNet' if is_drunet else 'not a DRUNet'}")
        if kind == "drunet":
            if self.patch_size is not None:
                raise ValueError("dpir: DRUNet runs on the whole image (any size); patch_size is for "
                                 "the diffusion UNet")
            return lambda x, s: _drunet(model, x, s)
        if self.patch_size is not None:
            model = PatchedModel(model, self.patch_size, self.patch_stride)
        return lambda x, s: self._diffusion_denoise(model, x, s)

    def _diffusion_denoise(self, model: Model, x: torch.Tensor, s: float) -> torch.Tensor:
        """The UNet's clipped x0 at the training step whose noise level on [-1, 1] is nearest 2 s."""
        d = self.train_diffusion
        t = int((d.sqrt_recipm1_alphas_cumprod - 2 * s).abs().argmin())
        x_t = math.sqrt(d.alphas_cumprod[t].item()) * (2 * x - 1)
        steps = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0 = d.p_mean_variance(model, x_t, steps, self.clip_denoised, self.var_type)["x0_hat"]
        return (x0 + 1) / 2

    def initial_state(self, shape: Sequence[int], op: Any, y: Optional[torch.Tensor], sigma: float,
                      generator: Generators, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The code's start on [-1, 1]: y (deblur: y has the image's shape), OpenCV-bicubic
        upsampling of y (SR, main_dpir_sisr.py:184), else A^+ y."""
        factor = sr_factor(y, shape)
        if factor is not None:
            return bicubic_upsample(y, factor).to(dtype)
        return (y if tuple(y.shape) == tuple(shape) else op.pinv(y)).to(dtype)

    def step(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("dpir is not a reverse-diffusion step; call sample()")

    def sample(self, model: Model, op: Any = None, y: Optional[torch.Tensor] = None, sigma: float = 0.0,
               shape: Optional[Sequence[int]] = None, generator: Optional[Generators] = None,
               callback: Optional[Callback] = None, progress: bool = False,
               device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
               start: Optional[tuple] = None) -> torch.Tensor:
        """Run the N iterations; returns the last denoised image on [-1, 1] (B, C, H, W), not clamped.

        As for every sampler: callback(i, x, x) after grid index i = N - 1 - k (x the iterate on
        [-1, 1], which is also the denoiser output), start=(i, x) resumes there, NaN/Inf stops
        with NonFiniteError. DPIR draws nothing: `generator` is accepted and unused. The data step
        runs in float64; blur and blur + decimation on [0, 1] against y01 = (y + 1) / 2, as the code
        receives its measurement (for SR's table kernel, summing to 0.9999, this differs from the
        [-1, 1] solve), other operators on [-1, 1] (where y = A x is made), as DiffPIR.
        """
        if y is None or shape is None:
            raise ValueError("dpir restores a measurement: pass y and the output shape (B, C, H, W)")
        self.check_task(op)
        dtype = y.dtype if y.is_floating_point() else dtype
        denoise = self.denoiser_of(model)
        sigmas, rhos = self.schedule(sigma, sr_factor(y, shape))
        if start is None:
            first, x = self.steps - 1, self.initial_state(shape, op, y, sigma, generator, y.device, dtype)
        else:
            first, x = start[0], start[1].to(y.device, dtype)
        indices: List[int] = list(range(first, -1, -1))
        for i in tqdm(indices, desc=self.name, leave=False, disable=not progress, total=self.steps,
                      initial=self.steps - len(indices)):
            k = self.steps - 1 - i
            # Data step (Eq. 7a) on the code's scale: [0, 1] for blur and blur + decimation (y01 = (y + 1) / 2),
            # [-1, 1] for other operators (DiffPIR.data_step). The iterate stays on [-1, 1] (callbacks, resume).
            x01 = (DiffPIR.data_step(op, x, y, rhos[k]) + 1) / 2
            mode = k % 8 if self.x8 else 0
            with torch.no_grad():                                            # prior step (Eq. 7b)
                z = augment_inverse(denoise(augment(x01, mode), sigmas[k]), mode).to(dtype)
            x = 2 * z - 1
            _check_finite(x, k, self.steps)
            if callback is not None:
                callback(i, x, x)
        return x


def _drunet(model: Model, x: torch.Tensor, s: float) -> torch.Tensor:
    """DRUNet with a constant noise map s, as the code's test_mode(mode=2) runs it on images of
    up to 256 x 256: replication padding (bottom, right) to a multiple of 16, one call, crop.
    (Larger images: the code denoises four overlapping quadrants; here one call on the padded image.)"""
    h, w = x.shape[-2:]
    pad = (0, -w % DRUNET_MODULO, 0, -h % DRUNET_MODULO)
    padded = F.pad(x, pad, mode="replicate") if any(pad) else x
    level = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)
    return model(padded, level)[..., :h, :w]


def _check_finite(x: torch.Tensor, k: int, steps: int) -> None:
    bad = ~torch.isfinite(x).flatten(1).all(dim=1)
    if bool(bad.any()):
        images = bad.nonzero().flatten().tolist()
        raise NonFiniteError(f"dpir: non-finite values at iteration {k + 1} of {steps} in image(s) {images}", images)
