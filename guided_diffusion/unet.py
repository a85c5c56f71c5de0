"""The ADM UNet (Dhariwal & Nichol 2021), written to load the public guided-diffusion checkpoints.

Module names and parameter order reproduce the public state dicts exactly (see
`shared/checkpoints/README.md`); the arithmetic reproduces the original network to float64
precision. Three details decide exactness: the sinusoidal timestep embedding (cosines first, built
in float64 for a float64 model and in float32 otherwise), the legacy head-major QKV ordering, and
group normalisation computed in at least float32.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def timestep_embedding(t: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of timesteps.

    t: (B,) timesteps on the training grid, integers or floats (DAPS's continuous timesteps; never
    rounded here). Returns (B, dim) in `dtype`: the dim // 2 cosines of
    t * freq_i followed by the sines, freq_i = exp(-ln(10000) * i / (dim // 2)); a zero column is
    appended when dim is odd.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) evaluated in at least float32, so half-precision features keep exact statistics."""

    def __init__(self, channels: int):
        super().__init__(32, channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        weight = self.weight.to(work) if self.weight is not None else None
        bias = self.bias.to(work) if self.bias is not None else None
        return F.group_norm(x.to(work), self.num_groups, weight, bias, self.eps).to(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: ADM starts every residual branch as the identity."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class CheckpointedModule(nn.Module):
    """Runs `_forward` under activation checkpointing when `use_checkpoint` and autograd is on.

    Non-reentrant checkpointing recomputes the block in the backward pass and propagates gradients
    to the block's inputs whether or not the parameters require grad, which is what DPS needs
    (d x0_hat / d x_t with a frozen network).
    """

    use_checkpoint: bool = False

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False)
        return self._forward(*args)


class TimestepSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution (named `conv`)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample(nn.Module):
    """Strided 3x3 convolution (named `op`) halving the resolution."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _resample(x: torch.Tensor, up: bool, down: bool) -> torch.Tensor:
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    return x


class ResBlock(CheckpointedModule):
    """Residual block conditioned on the timestep embedding, optionally resampling by 2.

    With `use_scale_shift_norm` the embedding gives (scale, shift) applied as
    norm(h) * (1 + scale) + shift; otherwise it is added to h before the second normalisation.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: Optional[int] = None,
                 use_scale_shift_norm: bool = False, use_checkpoint: bool = False,
                 up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_act, in_conv = self.in_layers[:-1], self.in_layers[-1]
        # With up/down the resampling sits between the activation and the conv, and on the skip path.
        h = in_conv(_resample(norm_act(x), self.up, self.down))
        x = _resample(x, self.up, self.down)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(CheckpointedModule):
    """Spatial self-attention over all H*W positions, with a residual connection.

    Legacy order (both public checkpoints): the 3C qkv channels are grouped by head first, head j
    owning [3cj, 3c(j+1)) = its queries, keys, values. The new order splits q, k, v first.
    Softmax(q k^T / sqrt(c)) equals the original's (q c^-1/4)(k c^-1/4) scaling.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_checkpoint: bool = False, use_new_attention_order: bool = False):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.use_checkpoint = use_checkpoint
        self.use_new_attention_order = use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        n, heads = flat.shape[-1], self.num_heads
        if self.use_new_attention_order:
            q, k, v = (part.reshape(b, heads, c // heads, n) for part in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b, heads, 3 * c // heads, n).chunk(3, dim=2)
        # SDPA wants (batch, heads, positions, head_dim).
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, n))
        return (flat + h).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """ADM UNet mapping (x_t, t) to eps (and the learned-range variance values when out_channels = 2C).

    x: (B, in_channels, H, W), any real dtype; t: (B,) integer timesteps on the training grid.
    `attention_resolutions` holds downsampling factors (image_size // feature-map size).
    """

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), num_classes: Optional[int] = None,
                 use_checkpoint: bool = False, use_fp16: bool = False, num_heads: int = 1,
                 num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels, self.num_classes = model_channels, num_classes
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(ch_in: int, ch_out: int, **kw) -> ResBlock:
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm, use_checkpoint, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_checkpoint, use_new_attention_order)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(int(channel_mult[0] * model_channels), out_channels, 3, padding=1)))
        if use_fp16:
            self.convert_to_fp16()

    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16, as ADM's `use_fp16` (norms and embeddings stay float32)."""
        for block in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in block.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()

    @property
    def torso_dtype(self) -> torch.dtype:
        return self.input_blocks[0][0].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, C, H, W); timesteps: (B,) in [0, T), ints or floats; y: (B,) class labels iff class-conditional."""
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y if and only if the model is class-conditional")
        embed_dtype = self.time_embed[0].weight.dtype
        # float64 models need a float64 embedding; otherwise the original builds it in float32.
        freq_dtype = torch.float64 if embed_dtype == torch.float64 else torch.float32
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, freq_dtype).to(embed_dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(self.torso_dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))
