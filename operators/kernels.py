"""Blur kernels: DPS Gaussian, uniform box, a seeded random-trajectory motion kernel, and the
official DiffPIR/DPIR kernel tables shipped in ``operators/kernel_tables`` (README there).

All kernels are float64 numpy arrays ``(k, k)``, saved/loaded as ``.npy``; the constructed ones sum
to one, the table entries are used as stored (the bicubic ones do not sum to one).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from operators.resize import cubic


def gaussian_kernel(kernel_size: int = 61, std: float = 3.0) -> np.ndarray:
    """DPS ``Blurkernel('gaussian')``: a centred delta filtered by ``scipy.ndimage.gaussian_filter``.

    With the default ``truncate=4.0`` only a ``(2r+1)^2`` core is non-zero, ``r = int(4 std + 0.5)``
    (12 for std 3), i.e. ``k = g g^T`` with ``g_j`` proportional to ``exp(-j^2 / (2 std^2))``.
    """
    delta = np.zeros((kernel_size, kernel_size))
    delta[kernel_size // 2, kernel_size // 2] = 1.0
    return ndimage.gaussian_filter(delta, sigma=std, truncate=4.0)


def uniform_kernel(kernel_size: int = 9) -> np.ndarray:
    """Box kernel of side ``kernel_size`` (DDRM/GDP "uniform deblurring" uses 9)."""
    return np.full((kernel_size, kernel_size), 1.0 / kernel_size**2)


def motion_path(rng: np.random.Generator, size: int = 61, intensity: float = 0.5) -> np.ndarray:
    """Random camera trajectory (complex points on a ``2 size`` canvas), OPERATORS_EVAL.md 1.3.

    Path length ``L = 0.75 D (U(0,1) + U(0, I^2))`` with ``D`` the canvas diagonal; steps
    ``Beta(1,30) (1 - I + 0.1) D``; step angles of magnitude ``Triangular(0, I M, M + 0.1)`` with
    ``M = U(0, I pi)``, keeping the previous sign except with probability ``Beta(2, 20)``.
    The path is centred on its mean, rotated by ``U(0, pi)`` and moved to the canvas centre.
    """
    canvas = 2 * size
    diagonal = math.hypot(canvas, canvas)
    eps = 0.1
    length = 0.75 * diagonal * (rng.uniform(0, 1) + rng.uniform(0, intensity**2))
    steps: list[float] = []
    total = 0.0
    while total < length:
        step = rng.beta(1, 30) * (1 - intensity + eps) * diagonal
        if step < length:
            steps.append(step)
            total += step
    max_angle = rng.uniform(0, intensity * math.pi)
    jitter = rng.beta(2, 20)
    angles = [rng.uniform(-max_angle, max_angle)]
    while len(angles) < len(steps):
        angle = rng.triangular(0, intensity * max_angle, max_angle + eps)
        flip = rng.uniform() < jitter
        angles.append(angle * (-1 if flip else 1) * np.sign(angles[-1]))
    path = np.cumsum(np.asarray(steps) * np.exp(1j * np.asarray(angles)))
    path = path - path.mean()
    path = path * np.exp(1j * rng.uniform(0, math.pi))
    return path + (canvas + 1j * canvas) / 2


def rasterize_path(path: np.ndarray, size: int = 61) -> np.ndarray:
    """Draw the path on the ``2 size`` canvas (line width ``int(D/150)``), blur with radius
    ``int(0.01 D)``, Lanczos-resize to ``size x size``, quantise to 8 bits, normalise to sum 1."""
    canvas = 2 * size
    diagonal = math.hypot(canvas, canvas)
    image = Image.new("L", (canvas, canvas), 0)
    points = [(float(p.real), float(p.imag)) for p in path]
    ImageDraw.Draw(image).line(points, fill=255, width=max(1, int(diagonal / 150)))
    image = image.filter(ImageFilter.GaussianBlur(radius=int(0.01 * diagonal)))
    image = image.resize((size, size), Image.LANCZOS)
    kernel = np.asarray(image, dtype=np.float64)
    return kernel / kernel.sum()


def motion_kernel(size: int = 61, intensity: float = 0.5,
                  rng: Union[np.random.Generator, int, None] = 0) -> np.ndarray:
    """Motion-blur kernel ``(size, size)`` summing to one, deterministic for a seed/Generator."""
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return rasterize_path(motion_path(rng, size, intensity), size)


def save_kernel(path: Union[str, Path], kernel: np.ndarray) -> None:
    """Write a kernel as a float64 ``.npy`` file (``kernel_path`` of the blur operators reads it)."""
    np.save(str(path), np.asarray(kernel, dtype=np.float64))


def load_kernel(path: Union[str, Path]) -> np.ndarray:
    """Read a 2-D kernel from ``.npy``; it is used as stored (not renormalised)."""
    kernel = np.load(str(path), allow_pickle=False)
    if kernel.ndim != 2 or not np.all(np.isfinite(kernel)):
        raise ValueError(f"kernel_path {path}: expected a finite 2-D array, got shape {kernel.shape}")
    return kernel.astype(np.float64)


TABLES_DIR = Path(__file__).resolve().parent / "kernel_tables"
# table name -> number of entries (the official Python index j of ``kernels[0, j]`` runs over them).
KERNEL_TABLES = {"bicubicx234": 3, "kernels_12": 12, "levin09": 8}


def table_kernel(table: str, index: int) -> np.ndarray:
    """Entry ``index`` of an official kernel table, float64 ``(k, k)`` exactly as the scripts load it
    (``hdf5storage.loadmat(...)['kernels'][0, index]``, no flip): ``bicubicx234`` (index sf - 2,
    25 x 25), ``kernels_12`` (25 x 25), ``levin09`` (its own odd size, 13..27)."""
    if table not in KERNEL_TABLES:
        raise ValueError(f"kernel_table must be one of {', '.join(KERNEL_TABLES)}, got {table!r}")
    count = KERNEL_TABLES[table]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise ValueError(f"kernel_index of table {table!r} must be an integer in 0..{count - 1}, got {index!r}")
    index = int(index)
    if table == "bicubicx234":
        return np.load(TABLES_DIR / f"bicubic_x{index + 2}.npy", allow_pickle=False)
    if table == "kernels_12":
        return np.load(TABLES_DIR / "kernels_12.npy", allow_pickle=False)[index]
    size = int(np.load(TABLES_DIR / "levin09_sizes.npy", allow_pickle=False)[index])
    pad = (27 - size) // 2  # stored zero-padded, centred, to 27 x 27
    return np.load(TABLES_DIR / "levin09.npy", allow_pickle=False)[index, pad:pad + size, pad:pad + size]


def bicubic_table_kernel(scale_factor: int = 4) -> np.ndarray:
    """DiffPIR's SR data-step kernel: ``kernels_bicubicx234.mat`` entry ``sf - 2`` (float32 values,
    main_ddpir_sisr.py L155, L173-174). Tabulated for 2, 3, 4 only (the script reuses the x4 entry
    for larger factors; here those need another kernel, e.g. ``bicubic_sr_kernel``)."""
    if scale_factor not in (2, 3, 4):
        raise ValueError(f"the bicubic kernel table has scale factors 2, 3, 4, not {scale_factor}; "
                         "use kernel: bicubic_sr_kernel (or kernel_path) for other factors")
    return table_kernel("bicubicx234", scale_factor - 2)


def bicubic_sr_kernel(scale_factor: int = 4) -> np.ndarray:
    """Analytic alternative to DiffPIR's tabulated kernel (``bicubic_table_kernel``), for any factor.

    Separable ``g g^T`` with ``g_m`` proportional to ``cubic((c - (s-1)/2 - m) / s)`` (the MATLAB
    antialiased bicubic kernel, width 4s), ``c`` the centre of a ``max(25, ...)``-tap grid. With
    ``p2o`` centring and ``[0::s]`` decimation, output i then weighs input j by the MATLAB imresize
    weight at ``j - (s i + (s-1)/2)``, so ``sr_blur_decimation`` equals the bicubic
    ``super_resolution`` away from the border (circular instead of mirrored boundary). Like the
    DiffPIR table its centre of mass is ``c - (s-1)/2`` (10.5 for s = 4 on 25 taps); unlike it, it
    sums to one (the x4 table entry differs from it by up to 1.9e-3).
    """
    size = max(25, 2 * math.ceil(2.5 * scale_factor - 0.5) + 1)
    centre = size // 2
    g = cubic((centre - (scale_factor - 1) / 2 - np.arange(size)) / scale_factor)
    g = g / g.sum()
    return np.outer(g, g)
