"""Training images: a folder read once into memory, served as random square crops with random
horizontal flips. Every random choice comes from the generator passed in, so a run's batches
are fixed by that generator's state.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

import torch

from guided_diffusion.image_io import list_images, load_image


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float image -> its uint8 levels (a quarter of the memory; exact for 8-bit files)."""
    return ((x + 1) * 127.5).round().to(torch.uint8)


class ImageCrops:
    """The images of `folder` (recursively; grayscale and RGBA become RGB, see `load_image`).

    load_size None keeps each image's own size; an int scales its shorter side to load_size and
    keeps the centre square. Every image must be at least crop_size on each side.
    """

    def __init__(self, folder: Union[str, Path], crop_size: int, load_size: Optional[int] = None, flip: bool = True):
        self.files = list_images(folder)
        self.crop_size, self.flip = crop_size, flip
        self.images: List[torch.Tensor] = []
        for path in self.files:
            img = load_image(path, load_size)
            if min(img.shape[1:]) < crop_size:
                raise ValueError(f"{path} is {img.shape[2]}x{img.shape[1]}, smaller than the {crop_size}x{crop_size} "
                                 f"crops; set data.load_size >= {crop_size} to scale images up")
            self.images.append(_to_levels(img))

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """(size, 3, crop, crop) float32 in [-1, 1] on the CPU: images drawn uniformly with replacement,
        each cropped at a uniform position and flipped with probability 1/2 (when `flip`)."""
        c = self.crop_size
        picks = torch.randint(len(self.images), (size,), generator=generator).tolist()
        crops = []
        for k in picks:
            img = self.images[k]
            top = int(torch.randint(img.shape[1] - c + 1, (), generator=generator))
            left = int(torch.randint(img.shape[2] - c + 1, (), generator=generator))
            crop = img[:, top:top + c, left:left + c]
            if self.flip and bool(torch.randint(2, (), generator=generator)):
                crop = crop.flip(-1)
            crops.append(crop)
        # The same arithmetic as load_image, so a crop equals the file's pixels bit for bit.
        return torch.stack(crops).to(torch.float32) / 127.5 - 1
