"""Build a test folder of 256x256 PNGs from a local copy of FFHQ or ImageNet:
`python data/build_testset.py --testset ffhq_1k --source /path/to/ffhq`.

Test sets (the papers' index lists as far as the reference notes state them):
  ffhq_1k       FFHQ 00000..00999, the DPS/DPPS validation images (DPS issue #4) -> data/ffhq_1k
  diffpir_ffhq_val_100  FFHQ 69007, 69017, ..., 69997 (DiffPIR testsets/ffhq_val_100.txt)
                -> data/diffpir_ffhq_val_100
  imagenet_1k   the first 1000 ILSVRC2012 validation images (by number) whose shorter side is at
                least 256 px (MCG issue #6, same group as DPS; the exact list is UNVERIFIED) -> data/imagenet_1k
  --list FILE   any other list (one file name or stem per line), e.g. DiffPIR's imagenet_val_100.txt
                (--out data/diffpir_imagenet_val_100) or GDP's list from XingangPan/deep-generative-prior;
                the reference notes do not reproduce either list.
Images are found by stem anywhere under --source (flat folders, FFHQ's 00000/ sub-folders and
class sub-folders all work). Each is scaled so the shorter side is 256 (bicubic, antialiased)
and centre-cropped; the papers' resizing of FFHQ 1024 and of ImageNet is UNVERIFIED (GDP:
Resize(256) + CenterCrop(256), which this is). Finished images are kept (resume); the chosen stems
are written to <out>/list.txt.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from guided_diffusion.files import atomic_write_text  # noqa: E402
from guided_diffusion.image_io import list_images, load_image, save_image  # noqa: E402

SIZE = 256


def ffhq_1k() -> List[str]:
    return [f"{k:05d}" for k in range(1000)]


def diffpir_ffhq_val_100() -> List[str]:
    return [f"{k:05d}" for k in range(69007, 70000, 10)]


def imagenet_candidates() -> List[str]:
    """All 50,000 ILSVRC2012 validation stems in number order; `select` keeps the first 1000 large ones."""
    return [f"ILSVRC2012_val_{k:08d}" for k in range(1, 50001)]


# name -> (stems in order, how many to keep, keep only images whose shorter side >= SIZE)
TESTSETS: Dict[str, tuple] = {
    "ffhq_1k": (ffhq_1k, 1000, False),
    "diffpir_ffhq_val_100": (diffpir_ffhq_val_100, 100, False),
    "imagenet_1k": (imagenet_candidates, 1000, True),
}


def index_source(source: Path) -> Dict[str, Path]:
    """stem -> image file under `source` (first in sorted order if a stem repeats)."""
    found: Dict[str, Path] = {}
    for f in list_images(source):
        found.setdefault(f.stem, f)
    return found


def select(stems: List[str], files: Dict[str, Path], count: int, min_side: bool) -> List[str]:
    """The first `count` stems (in list order) present in `files` and, with `min_side`, at least SIZE on
    the shorter side. Missing stems are an error unless the list is a candidate pool (`min_side`)."""
    if not min_side:
        missing = [s for s in stems[:count] if s not in files]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {count} images are not under the source "
                                    f"(first: {', '.join(missing[:3])})")
        return stems[:count]
    chosen = []
    for stem in tqdm([s for s in stems if s in files], desc="checking sizes", unit="img"):
        with Image.open(files[stem]) as img:
            if min(img.size) >= SIZE:
                chosen.append(stem)
        if len(chosen) == count:
            return chosen
    raise FileNotFoundError(f"only {len(chosen)} images of at least {SIZE} px found, {count} needed")


def read_list(path: Path) -> List[str]:
    """Stems from a list file: one name per line, extensions and folders dropped, blank lines ignored."""
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def build(stems: List[str], files: Dict[str, Path], out: Path) -> int:
    """Write out/<stem>.png for every stem not yet written; returns how many were written."""
    listing = out / "list.txt"
    text = "\n".join(stems) + "\n"
    if listing.exists() and listing.read_text() != text:
        raise FileExistsError(f"{out} holds another test set ({listing} differs); choose another --out")
    atomic_write_text(listing, text)
    written = 0
    for stem in tqdm(stems, desc=out.name, unit="img"):
        target = out / f"{stem}.png"
        if not target.exists():
            save_image(load_image(files[stem], SIZE, "center_crop"), target)
            written += 1
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder holding the dataset's images")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--testset", choices=sorted(TESTSETS), help="a test set defined above")
    group.add_argument("--list", type=Path, help="a file of image names, one per line")
    parser.add_argument("--out", type=Path, help="output folder (default data/<testset> or data/<list name>)")
    args = parser.parse_args(argv)
    name = args.testset or args.list.stem
    out = args.out or REPO / "data" / name
    try:
        files = index_source(args.source)
        if args.list:
            if not args.list.is_file():
                raise FileNotFoundError(f"list file {args.list.absolute()} does not exist")
            stems = read_list(args.list)
            stems = select(stems, files, len(stems), False)
        else:
            pool, count, min_side = TESTSETS[args.testset]
            stems = select(pool(), files, count, min_side)
        written = build(stems, files, out)
    except (OSError, ValueError) as err:  # missing/unreadable files, another test set in --out
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{out}: {len(stems)} images ({written} written now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
