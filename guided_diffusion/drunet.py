"""DRUNet, the denoiser of DPIR (Zhang et al., TPAMI 2021): the official `UNetRes` layout.

Written from the layout in shared/checkpoints/drunet_color.spec.json and that folder's README
(cszn/DPIR@15bca3f, models/network_unet.py); its module names fix the state-dict keys, so the
released `drunet_color.pth` / `drunet_gray.pth` and the golden `golden_drunet_small.pt` load
strictly. A four-level UNet of residual blocks without biases or normalisation:

    x1 = head(x0); x2 = down1(x1); x3 = down2(x2); x4 = down3(x3)
    x = body(x4); x = up3(x + x4); x = up2(x + x3); x = up1(x + x2); out = tail(x + x1)

No global skip and no clamp. The input is the image on [0, 1] with a constant noise-level map
(the noise std on [0, 1], i.e. sigma_255 / 255) appended as the last channel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

# The official class also offers other activations and resamplers; the released files and the
# golden file use these, and only these are built here.
SUPPORTED = {"act_mode": "R", "downsample_mode": "strideconv", "upsample_mode": "convtranspose"}
LEVELS = 4  # len(nc): head width and three downsampled widths


class ResBlock(nn.Module):
    """x + conv3x3(ReLU(conv3x3(x))), no biases (state-dict names `.res.0`, `.res.2`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.res = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels, channels, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class DRUNet(nn.Module):
    """UNetRes(in_nc, out_nc, nc, nb): `nb` residual blocks per level, widths `nc` (4 levels).

    Call `model(x)` with x (B, in_nc, H, W) holding the image and the noise map (the official
    interface), or `model(x, sigma)` with x (B, in_nc - 1, H, W) on [0, 1] and sigma the noise std
    on [0, 1] (a number or a (B,) tensor), appended as a constant map. H and W must be multiples
    of 8. Returns (B, out_nc, H, W), the denoised image on [0, 1] (not clamped).
    image_size: the size a run restores images at (DRUNet is fully convolutional; None: any).
    """

    def __init__(self, in_nc: int = 4, out_nc: int = 3, nc: Sequence[int] = (64, 128, 256, 512), nb: int = 4,
                 act_mode: str = "R", downsample_mode: str = "strideconv", upsample_mode: str = "convtranspose",
                 image_size: Optional[int] = None):
        super().__init__()
        given = {"act_mode": act_mode, "downsample_mode": downsample_mode, "upsample_mode": upsample_mode}
        for key, value in given.items():
            if value != SUPPORTED[key]:
                raise ValueError(f"DRUNet {key} {value!r} is not built here (only {SUPPORTED[key]!r}, "
                                 f"the released drunet_color/drunet_gray layout)")
        nc = [int(c) for c in nc]
        if len(nc) != LEVELS or in_nc < 2 or out_nc < 1 or nb < 1:
            raise ValueError(f"DRUNet needs 4 widths nc, in_nc >= 2 (image + noise map), out_nc >= 1, nb >= 1; "
                             f"got nc={nc}, in_nc={in_nc}, out_nc={out_nc}, nb={nb}")
        self.kwargs: Dict[str, Any] = dict(in_nc=in_nc, out_nc=out_nc, nc=nc, nb=nb, **given)
        self.in_channels, self.out_channels, self.image_size = in_nc - 1, out_nc, image_size

        def blocks(c: int) -> list:
            return [ResBlock(c) for _ in range(nb)]

        self.m_head = nn.Conv2d(in_nc, nc[0], 3, padding=1, bias=False)
        self.m_down1 = nn.Sequential(*blocks(nc[0]), nn.Conv2d(nc[0], nc[1], 2, stride=2, bias=False))
        self.m_down2 = nn.Sequential(*blocks(nc[1]), nn.Conv2d(nc[1], nc[2], 2, stride=2, bias=False))
        self.m_down3 = nn.Sequential(*blocks(nc[2]), nn.Conv2d(nc[2], nc[3], 2, stride=2, bias=False))
        self.m_body = nn.Sequential(*blocks(nc[3]))
        self.m_up3 = nn.Sequential(nn.ConvTranspose2d(nc[3], nc[2], 2, stride=2, bias=False), *blocks(nc[2]))
        self.m_up2 = nn.Sequential(nn.ConvTranspose2d(nc[2], nc[1], 2, stride=2, bias=False), *blocks(nc[1]))
        self.m_up1 = nn.Sequential(nn.ConvTranspose2d(nc[1], nc[0], 2, stride=2, bias=False), *blocks(nc[0]))
        self.m_tail = nn.Conv2d(nc[0], out_nc, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, sigma: Union[float, torch.Tensor, None] = None) -> torch.Tensor:
        if sigma is not None:
            level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
            x = torch.cat([x, level.expand(x.shape[0], 1, *x.shape[-2:])], dim=1)
        if x.shape[1] != self.kwargs["in_nc"] or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"DRUNet takes (B, {self.kwargs['in_nc']}, H, W) with H, W multiples of 8 "
                             f"(or the image and sigma), got {tuple(x.shape)}")
        x1 = self.m_head(x)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        h = self.m_body(x4)
        h = self.m_up3(h + x4)
        h = self.m_up2(h + x3)
        h = self.m_up1(h + x2)
        return self.m_tail(h + x1)


def is_drunet_layout(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys are DRUNet's (m_head, m_down1..3, m_body, m_up3..1, m_tail)."""
    prefixes = ("m_head.", "m_down1.", "m_down2.", "m_down3.", "m_body.", "m_up3.", "m_up2.", "m_up1.", "m_tail.")
    return "m_head.weight" in state_dict and all(str(k).startswith(prefixes) for k in state_dict)


def drunet_kwargs(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Constructor arguments read off a DRUNet state dict's shapes (a strict load then checks all)."""
    head, tail = state_dict["m_head.weight"], state_dict["m_tail.weight"]
    nb = len({k.split(".")[1] for k in state_dict if k.startswith("m_body.")})
    widths = [int(head.shape[0])] + [int(state_dict[f"m_down{i}.{nb}.weight"].shape[0])
                                     for i in (1, 2, 3) if f"m_down{i}.{nb}.weight" in state_dict]
    return dict(in_nc=int(head.shape[1]), out_nc=int(tail.shape[0]), nc=widths, nb=nb, **SUPPORTED)


@dataclass(frozen=True)
class PublicDRUNet:
    """A released DRUNet file: its name, where users get it, and its constructor arguments."""

    filename: str
    url: str
    kwargs: Dict[str, Any]


_DPIR_ZOO = ("the DPIR model zoo, Google Drive folder https://drive.google.com/drive/folders/"
             "13kfr3qny7S2xwG9h7v95F5mkWs0OmU0D (DPIR model_zoo/README.md), or ")
PUBLIC_DRUNETS: Dict[str, PublicDRUNet] = {
    name: PublicDRUNet(f"{name}.pth", _DPIR_ZOO + f"https://github.com/cszn/KAIR/releases/download/v1.0/{name}.pth "
                                                  f"(DPIR main_download_pretrained_models.py)",
                       dict(in_nc=channels + 1, out_nc=channels, nc=[64, 128, 256, 512], nb=4, **SUPPORTED))
    for name, channels in (("drunet_color", 3), ("drunet_gray", 1))
}
