"""Build the demo prior's training folder and its held-out test crops from the photographs that
ship inside scikit-image (no download): `python data/build_demo_data.py`.

Training (`data/skimage_photos/`, not committed): the TRAIN photos, each saved whole at three
scales (shorter side 96, 128 and 192 pixels, bicubic with antialiasing), so that random 64x64
crops see both whole objects and detail. Held out (`data/demo/`, committed): the HELD_OUT
photos, which the prior never sees, scaled to a shorter side of 128 and cut into four 64x64
crops each (the corners of the centred 128x128 square), i.e. the scale in the middle of the
training range. Validation (`data/demo_val/`, committed): motorcycle_right, cut the same way,
on which the demo configs' sampler settings were picked; it is the other stereo view of the
training photo motorcycle_left, so it is disjoint from the test crops but not independent of
the training data.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

TRAIN = ["astronaut.png", "brick.png", "camera.png", "cell.png", "coins.png", "grass.png", "gravel.png",
         "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "page.png", "retina.jpg", "text.png"]
HELD_OUT = ["chelsea.png", "coffee.png", "rocket.jpg"]
VALIDATION = ["motorcycle_right.png"]
TRAIN_SCALES = (96, 128, 192)
TEST_SCALE, CROP = 128, 64


def shorter_side_to(path: Path, size: int) -> Image.Image:
    """The whole photo as 8-bit RGB with its shorter side scaled to `size` (PIL bicubic, antialiased)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    return img.resize((round(w * size / min(w, h)), round(h * size / min(w, h))), Image.BICUBIC)


def save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-out", default=str(REPO / "data" / "skimage_photos"))
    parser.add_argument("--test-out", default=str(REPO / "data" / "demo"))
    parser.add_argument("--val-out", default=str(REPO / "data" / "demo_val"))
    args = parser.parse_args()
    src = Path(skimage.data.__file__).parent
    for name in TRAIN:
        for size in TRAIN_SCALES:
            save(shorter_side_to(src / name, size), Path(args.train_out) / f"{Path(name).stem}_{size}.png")
    for names, folder in ((HELD_OUT, args.test_out), (VALIDATION, args.val_out)):
        for name in names:
            img = shorter_side_to(src / name, TEST_SCALE)
            left, top = (img.size[0] - TEST_SCALE) // 2, (img.size[1] - TEST_SCALE) // 2
            for i, (dy, dx) in enumerate([(0, 0), (0, CROP), (CROP, 0), (CROP, CROP)]):
                crop = img.crop((left + dx, top + dy, left + dx + CROP, top + dy + CROP))
                save(crop, Path(folder) / f"{Path(name).stem}_{i}.png")
    print(f"{len(TRAIN) * len(TRAIN_SCALES)} training images in {args.train_out}, "
          f"{len(HELD_OUT) * 4} held-out crops in {args.test_out}, {len(VALIDATION) * 4} in {args.val_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
