"""One training run's state and its update step: the UNet, an EMA of its weights, AdamW, the fp16
loss scaler and the random generators, all saved and restored together so that a resumed run
continues the uninterrupted one exactly (bit for bit on CPU, same torch build and thread count).
"""
from __future__ import annotations

import math
from typing import Any, Dict

import torch

from configs import ConfigError
from guided_diffusion.diffusion import GaussianDiffusion, randn_like
from guided_diffusion.losses import training_losses, uniform_timesteps
from guided_diffusion.models import check_state_dict, create_model
from guided_diffusion.runtime import ModelRunner

from .config import model_flags
from .data import ImageCrops

# Independent random streams from one seed: weight init and dropout (the global RNG, since
# nn.Dropout takes no generator), the data (image, crop, flip) and the diffusion (t, noise).
GLOBAL_STREAM, DATA_STREAM, NOISE_STREAM = 0, 1, 2


def stream_seed(seed: int, stream: int) -> int:
    """A distinct seed for each (run seed, stream) pair."""
    return seed * 3 + stream


class Trainer:
    """Build a fresh run from a validated training config on `device`; `train_step` is one update.

    Mixed precision (config `precision`) applies on CUDA only; on CPU the run is float32.
    """

    def __init__(self, cfg: Dict[str, Any], device: torch.device):
        self.cfg, self.device = cfg, device
        seed = cfg["seed"]
        torch.manual_seed(stream_seed(seed, GLOBAL_STREAM))
        self.model = create_model(**model_flags(cfg)).to(device).train()
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.diffusion = GaussianDiffusion.from_config(cfg["diffusion"]["schedule"], cfg["diffusion"]["num_train_timesteps"])
        opt = cfg["optim"]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt["lr"], weight_decay=opt["weight_decay"])
        self.precision = cfg["precision"] if device.type == "cuda" else "fp32"
        # The runner autocasts the network and returns float32, so the losses are float32.
        self.runner = ModelRunner(self.model, precision=self.precision)
        # fp16's narrow exponent range needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.data_generator = torch.Generator().manual_seed(stream_seed(seed, DATA_STREAM))
        self.noise_generator = torch.Generator(device).manual_seed(stream_seed(seed, NOISE_STREAM))
        self.step = 0

    def train_step(self, data: ImageCrops) -> Dict[str, float]:
        """Draw a batch, take one AdamW step, update the EMA; returns the batch means of the loss
        terms ("loss", "mse", and "vlb" for learned variances) and the pre-clipping "grad_norm"."""
        x0 = data.batch(self.cfg["batch_size"], self.data_generator).to(self.device)
        t = uniform_timesteps(self.diffusion, len(x0), self.noise_generator)
        noise = randn_like(x0, self.noise_generator)
        terms = training_losses(self.diffusion, self.runner, x0, t, noise, self.cfg["loss"]["vlb_weight"])
        loss = terms["loss"].mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} at step {self.step + 1}; lower optim.lr "
                                     f"or use precision fp32/bf16, and resume from the last checkpoint")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg["optim"]["grad_clip"] or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # Under fp16 the scaler skips steps whose gradients overflowed; the EMA skips them too.
        if torch.isfinite(grad_norm):
            self._update_ema()
        self.step += 1
        stats = {k: v.mean().item() for k, v in terms.items()}
        stats["grad_norm"] = grad_norm.item()
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema <- rate * ema + (1 - rate) * weights, for every floating-point tensor of the model."""
        weight = 1.0 - self.cfg["optim"]["ema_rate"]
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                self.ema[name].lerp_(value, weight)
            else:
                self.ema[name].copy_(value)

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed run needs: tensors and plain containers only (weights_only loads it)."""
        rng = {"global": torch.get_rng_state(), "data": self.data_generator.get_state(),
               "noise": self.noise_generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"step": self.step, "device_type": self.device.type, "model": self.model.state_dict(),
                "ema": self.ema, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a `state_dict()` saved by a run with the same config on the same device type."""
        if state["device_type"] != self.device.type:
            raise ConfigError(f"the run was trained on {state['device_type']}; its random streams "
                              f"cannot continue on {self.device.type} (set device accordingly)")
        check_state_dict(self.model, state["model"], source="train_state model")
        check_state_dict(self.model, state["ema"], source="train_state ema")
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            for name, value in state["ema"].items():
                self.ema[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["global"])
        if "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.data_generator.set_state(state["rng"]["data"])
        self.noise_generator.set_state(state["rng"]["noise"])
        self.step = int(state["step"])
