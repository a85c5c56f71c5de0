"""LPIPS (Zhang et al. 2018, the `lpips` package, v0.1 linear layers) with a locally stored backbone.

The papers use the VGG backbone (DPS, DiffPIR, GDP all call `lpips.LPIPS(net='vgg')`). The `lpips`
package ships its linear layers but downloads the torchvision backbone on first use; here the
backbone is read from a local file instead (see `local_weights`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from .errors import EvaluationError
from .weights import load_state_dict, local_weights

# torchvision's ImageNet weights files for the two backbones the papers use.
BACKBONES = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}
ENV_VAR = "LPIPS_BACKBONE"


class LPIPS:
    """Callable: (B, 3, H, W) uint8 recon and label -> (B,) float64 LPIPS distances (0 = identical).

    Images are mapped to [-1, 1] (the range the `lpips` package expects, as DPS and DiffPIR do;
    GDP's [0, 1] BGR inputs are not reproduced).
    """

    def __init__(self, net: str = "vgg", weights: Optional[str] = None, device: torch.device = torch.device("cpu")):
        if net not in BACKBONES:
            raise EvaluationError(f"LPIPS backbone must be one of {', '.join(BACKBONES)}, got {net!r}")
        filename, url = BACKBONES[net]
        path = local_weights(f"LPIPS {net} backbone", filename, url, ENV_VAR, weights)
        import lpips  # imported here: loading it is slow and only this metric needs it

        # pnet_rand=True builds the backbone without downloading; the package still passes
        # torchvision's deprecated `pretrained` argument, whose warnings are noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        self._load_backbone(path, net)
        self.model.eval().requires_grad_(False).to(device)
        self.device = device

    def _load_backbone(self, path: Path, net: str) -> None:
        """Copy torchvision's `features.<i>.*` tensors into lpips' `slice<k>.<i>.*` (same layer index i)."""
        state = load_state_dict(path, f"torchvision {net}")
        target = self.model.net.state_dict()
        mapped = {}
        for key in target:
            source = "features." + key.split(".", 1)[1]
            if source not in state or state[source].shape != target[key].shape:
                raise EvaluationError(f"{path} is not the torchvision {net} ImageNet state dict "
                                      f"({source} missing or mis-shaped)")
            mapped[key] = state[source]
        self.model.net.load_state_dict(mapped)

    @torch.no_grad()
    def __call__(self, recon: Tensor, label: Tensor) -> Tensor:
        def scale(x: Tensor) -> Tensor:
            return x.to(self.device, torch.float32) / 127.5 - 1
        return self.model(scale(recon), scale(label)).flatten().double().cpu()
