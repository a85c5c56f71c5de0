"""Figures of restorations: a grid of tiles with column titles, row labels and per-tile captions."""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from PIL import Image, ImageDraw

from guided_diffusion.image_io import to_uint8

PAD, HEADER, LEFT = 2, 16, 96  # grid padding, title strip height, row-label strip width (pixels)


def caption(tile: torch.Tensor, text: str) -> torch.Tensor:
    """The (3, H, W) tile in [-1, 1] with `text` written on a black strip at its bottom-left."""
    img = Image.fromarray(to_uint8(tile))
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((2, img.height - 12), text)
    draw.rectangle((0, box[1] - 1, box[2] + 2, img.height), fill="black")
    draw.text((2, img.height - 12), text, fill="white")
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def compose(grid: torch.Tensor, columns: List[str], labels: List[str], tile: int) -> torch.Tensor:
    """Add the column titles above and the row labels left of a make_grid image; (3, H', W') in [-1, 1]."""
    body = Image.fromarray(to_uint8(grid))
    canvas = Image.new("RGB", (body.width + LEFT, body.height + HEADER), "white")
    canvas.paste(body, (LEFT, HEADER))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(columns):
        while len(name) > 1 and draw.textlength(name) > tile:  # keep titles inside their column
            name = name[:-1]
        draw.text((LEFT + PAD + k * (tile + PAD), 2), name, fill="black")
    for r, text in enumerate(labels):
        draw.multiline_text((4, HEADER + PAD + r * (tile + PAD) + 4), text, fill="black")
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
