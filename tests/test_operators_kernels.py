"""Blur kernels: formulas, normalisation, motion-kernel determinism and spread, .npy round trip, the
shipped official kernel tables (operators/kernel_tables)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from operators import build_operator
from operators.kernels import (TABLES_DIR, bicubic_sr_kernel, bicubic_table_kernel, gaussian_kernel, load_kernel,
                               motion_kernel, motion_path, save_kernel, table_kernel, uniform_kernel)


def second_moment_radius(weights: np.ndarray) -> float:
    """sqrt of the kernel's spatial variance (sum over both axes) around its centre of mass."""
    rows, cols = np.indices(weights.shape)
    w = weights / weights.sum()
    cy, cx = (w * rows).sum(), (w * cols).sum()
    return float(np.sqrt((w * ((rows - cy) ** 2 + (cols - cx) ** 2)).sum()))


def path_radius(path: np.ndarray) -> float:
    """Same statistic for the continuous polyline, weighted by arc length (segment: |mid|^2 + L^2/12)."""
    a, b = path[:-1], path[1:]
    length = np.abs(b - a)
    mid = (a + b) / 2
    w = length / length.sum()
    centre = (w * mid).sum()
    return float(np.sqrt((w * (np.abs(mid - centre) ** 2 + length**2 / 12)).sum()))


def test_gaussian_kernel_is_dps_formula() -> None:
    """61 x 61, std 3: k = g g^T, g_j prop. to exp(-j^2/18) for |j| <= 12 (truncate 4), 0 beyond."""
    k = gaussian_kernel(61, 3.0)
    j = np.arange(-12, 13)
    g = np.exp(-(j**2) / 18.0)
    g /= g.sum()
    expected = np.zeros((61, 61))
    expected[30 - 12:30 + 13, 30 - 12:30 + 13] = np.outer(g, g)
    assert k.shape == (61, 61)
    assert abs(k.sum() - 1) < 1e-12
    assert np.abs(k - expected).max() < 1e-15


def test_operator_uses_the_kernel() -> None:
    op = build_operator("gaussian_blur", kernel_size=61, intensity=3.0)
    assert np.array_equal(op.kernel.numpy(), gaussian_kernel(61, 3.0))
    assert op.kernel.dtype.is_floating_point and op.kernel.dtype.itemsize == 8


def test_uniform_kernel() -> None:
    k = uniform_kernel(9)
    assert k.shape == (9, 9) and np.allclose(k, 1 / 81) and abs(k.sum() - 1) < 1e-14


def test_motion_kernel_deterministic_per_seed() -> None:
    a, b, c = motion_kernel(61, 0.5, 7), motion_kernel(61, 0.5, 7), motion_kernel(61, 0.5, 8)
    assert a.shape == (61, 61)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(a.sum() - 1) < 1e-12 and a.min() >= 0
    # A Generator and the equivalent seed give the same kernel.
    assert np.array_equal(motion_kernel(61, 0.5, np.random.default_rng(7)), a)


def test_motion_kernel_spread() -> None:
    """Statistic: second-moment radius r (pixels) of 100 kernels (seeds 0..99), size 61, I = 0.5.

    Derivation from the algorithm: the trajectory length on the 2x canvas is
    0.75 D (U(0,1) + U(0, I^2)), D = 122 sqrt 2, plus the overshoot of the last Beta(1,30) step
    (size-biased mean ~ 0.065 (1.1 - I) D = 6.7 canvas px), i.e. E[L] = 0.375 D (1/2 + I^2/2) + 3.3
    = 43.8 px after the 2x reduction. A straight segment of length L has r = L / sqrt 12 and any
    bend only shrinks r, so E[r] <= 12.6 (+ a blur of about one pixel); angle spread (|a| <= I pi/2
    around a mean direction) keeps most paths nearly straight, so E[r] should lie in [9.5, 13.5]
    (measured: 11.90). Per kernel, the rasterised radius must follow the continuous path's radius
    (paths that stay inside the canvas): measured max |difference| 0.55 px, bound 1.0 px.
    Step count: E[N] = E[L]/E[step] + 1 (renewal overshoot) = 80.9 / (0.6 D / 31) + 1 = 25.2 on the
    canvas; standard error of a 100-path mean ~ 1.2, so the mean must lie in [20, 31] (measured
    27.7; Beta(1, 20) steps would give ~17).
    """
    radii, diffs, counts = [], [], []
    for seed in range(100):
        path = motion_path(np.random.default_rng(seed), 61, 0.5)
        counts.append(len(path))
        r = second_moment_radius(motion_kernel(61, 0.5, seed))
        radii.append(r)
        inside = path.real.min() >= 1 and path.imag.min() >= 1 and max(path.real.max(), path.imag.max()) <= 121
        if inside:
            diffs.append(abs(r - path_radius(path) / 2))
    assert 9.5 <= np.mean(radii) <= 13.5
    assert 20 <= np.mean(counts) <= 31
    assert len(diffs) > 70 and max(diffs) < 1.0


def test_kernel_npy_round_trip(tmp_path) -> None:
    op = build_operator("motion_blur", kernel_size=31, seed=5)
    op.save_kernel(tmp_path / "k.npy")
    again = build_operator("motion_blur", kernel_path=str(tmp_path / "k.npy"))
    assert np.array_equal(again.kernel.numpy(), op.kernel.numpy())
    save_kernel(tmp_path / "g.npy", gaussian_kernel(7, 1.0))
    assert np.array_equal(load_kernel(tmp_path / "g.npy"), gaussian_kernel(7, 1.0))
    np.save(tmp_path / "bad.npy", np.ones(5))
    with pytest.raises(ValueError, match="kernel_path"):
        load_kernel(tmp_path / "bad.npy")


@pytest.mark.parametrize("s", [2, 3, 4, 8])
def test_bicubic_sr_kernel(s: int) -> None:
    """Analytic DiffPIR-style kernel: sums to 1, centre of mass c - (s-1)/2 (10.5 for x4 on 25 taps)."""
    k = bicubic_sr_kernel(s)
    c = k.shape[0] // 2
    assert k.shape[0] >= 25 and abs(k.sum() - 1) < 1e-12
    com = (k.sum(axis=1) * np.arange(k.shape[0])).sum()
    assert abs(com - (c - (s - 1) / 2)) < 1e-12
    assert np.abs(k[0]).max() == 0 and np.abs(k[:, -1]).max() == 0  # support inside the grid


# sha256 of the shipped tables as exported from the official .mat files (operators/kernel_tables/README.md).
TABLE_SHA256 = {
    "bicubic_x2.npy": "d4dbe581f127b4d3d64fd9e904fa72c7b9fb75975653df567aaebf65efc5488f",
    "bicubic_x3.npy": "4d84bdfe5c86561d5c00d7aece336e0c94464a4ed322b6bea810ba8aaea4777d",
    "bicubic_x4.npy": "667e43b902cb72a65be8a5f51c0c839833e3954ada9d64d37872bf7fa5e93504",
    "kernels_12.npy": "a3934997c3d5dfc2649def44c2d2252d90658753c1e8be0362b9c120fedef74f",
    "levin09.npy": "4967dceeec6acd52af8c535585e405f3dbf4f76e247c84c2ba8dd5ab973e52f6",
    "levin09_sizes.npy": "0b8ec6562df67d5cada5df14ef878543db7cf8d67f80428d311fe1e135d03d65",
}


@pytest.mark.parametrize("name", sorted(TABLE_SHA256))
def test_shipped_tables_are_the_exported_files(name: str) -> None:
    assert hashlib.sha256((TABLES_DIR / name).read_bytes()).hexdigest() == TABLE_SHA256[name]


@pytest.mark.parametrize("s,total", [(2, 0.99998467615), (3, 1.00000239831), (4, 0.99989770425)])
def test_bicubic_table_kernels(s: int, total: float) -> None:
    """Entry s - 2 of kernels_bicubicx234.mat: 25 x 25, float32 values (exact float64 widening), the
    official sums (not 1) and centre of mass 12 - (s - 1) / 2 (to 1e-3)."""
    k = bicubic_table_kernel(s)
    assert k.shape == (25, 25) and k.dtype == np.float64
    assert np.array_equal(k.astype(np.float32).astype(np.float64), k)
    assert abs(k.sum() - total) < 1e-10
    com = (k.sum(axis=1) * np.arange(25)).sum() / k.sum()
    assert abs(com - (12 - (s - 1) / 2)) < 1e-3
    assert np.array_equal(k, table_kernel("bicubicx234", s - 2))


def test_kernels_12_and_levin09_tables() -> None:
    """kernels_12: 12 entries of 25 x 25 summing to 1 (1.3e-8), 0-3 symmetric; levin09: the 8 kernels
    cropped to their odd sizes 19, 17, 15, 27, 13, 21, 23, 23, sums 1 (1e-12), nothing cut off."""
    twelve = [table_kernel("kernels_12", i) for i in range(12)]
    assert all(k.shape == (25, 25) and abs(k.sum() - 1) < 2e-8 for k in twelve)
    assert all(np.array_equal(k, k.T) for k in twelve[:4])
    sizes = [table_kernel("levin09", i).shape[0] for i in range(8)]
    assert sizes == [19, 17, 15, 27, 13, 21, 23, 23]
    padded = np.load(TABLES_DIR / "levin09.npy")
    for i in range(8):
        k = table_kernel("levin09", i)
        assert abs(k.sum() - 1) < 1e-12 and abs(padded[i].sum() - k.sum()) < 1e-15


def test_tables_by_name_in_operators() -> None:
    """YAML names: sr_blur_decimation defaults to the table (bicubic_sr_kernel on request), and
    kernel_table / kernel_index pick any entry; bad names and indices raise one-line errors."""
    default = build_operator("sr_blur_decimation", scale_factor=3).kernel.numpy()
    assert np.array_equal(default, bicubic_table_kernel(3))
    analytic = build_operator("sr_blur_decimation", scale_factor=4, kernel="bicubic_sr_kernel").kernel.numpy()
    assert np.array_equal(analytic, bicubic_sr_kernel(4))
    chosen = build_operator("sr_blur_decimation", scale_factor=2, kernel_table="kernels_12", kernel_index=5)
    assert np.array_equal(chosen.kernel.numpy(), table_kernel("kernels_12", 5))
    motion = build_operator("motion_blur", kernel_table="levin09", kernel_index=4, boundary="circular")
    assert motion.kernel.shape == (13, 13) and motion.params["kernel_table"] == "levin09"
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    assert torch.allclose(motion(x).sum(), x.sum(), rtol=1e-12)  # circular blur with a sum-1 kernel
    with pytest.raises(ValueError, match="scale factors 2, 3, 4"):
        build_operator("sr_blur_decimation", scale_factor=8)
    with pytest.raises(ValueError, match="kernel_index"):
        table_kernel("levin09", 8)
    with pytest.raises(ValueError, match="kernel_table"):
        build_operator("motion_blur", kernel_table="levin10")
    with pytest.raises(ValueError, match="kernel must be one of"):
        build_operator("sr_blur_decimation", kernel="bicubic")
