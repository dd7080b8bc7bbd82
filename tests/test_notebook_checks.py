"""The notebook checks themselves: the figure tolerance and the second numeric environment."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

from matplotlib.figure import Figure
import numpy as np
import pytest
from notebook_checks import FIGURE_TOLERANCE, figure_difference, png_pixels, second_env, simd_groups_found
from threadpoolctl import threadpool_info

from bnbackprop.draw import draw_jacobian


def png(draw) -> bytes:
    """A figure drawn by `draw(ax)`, saved the way the notebooks' inline backend saves it."""
    return save(draw, (5, 3.4))


def save(draw, size) -> bytes:
    """PNG bytes of a Figure of `size` inches drawn by `draw(ax)` (no pyplot, so no GUI backend)."""
    fig = Figure(figsize=size)
    draw(fig.add_subplot())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def curves(x, y):
    """A log-log line with markers and a reference line, like the chapters' sweeps."""
    def draw(ax):
        ax.loglog(x, y, "o-", ms=4)
        ax.loglog(x, 1 / x, ":", color="gray")
        ax.set(xlim=(0.5, 2e3), ylim=(1e-4, 10))  # fixed limits: the test moves data, not axes
    return draw


def jacobian(J):
    """A Jacobian as the chapters draw it, with the values written in the cells."""
    return lambda ax: draw_jacobian(J, ax=ax, annotate=True, title="J")


def ulps(a, k, rng):
    """a moved by k ulps, up or down at random, entry by entry."""
    out = a.copy()
    for _ in range(k):
        out = np.nextafter(out, np.where(rng.random(a.shape) < 0.5, -np.inf, np.inf))
    return out


def test_a_few_ulps_in_the_data_pass_though_some_pixels_change():
    # Four ulps already flip Agg's 1/256-pixel rounding of some vertices: a byte-for-byte comparison
    # would fail on another CPU's last bits; the tolerance does not.
    changed = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        x = np.logspace(0, 3, 12)
        y = (1 + 0.3 * rng.random(12)) / x
        B = 4 + seed % 3
        J = np.eye(B) - 1 / B - np.outer(*2 * [rng.standard_normal(B)]) / B
        pairs = ((curves(x, y), curves(ulps(x, 4, rng), ulps(y, 4, rng))), (jacobian(J), jacobian(ulps(J, 4, rng))))
        for draw, moved in pairs:
            before, after = png(draw), png(moved)
            assert figure_difference(before, after) is None
            changed += not np.array_equal(png_pixels(before), png_pixels(after))
    assert changed > 0


def test_a_subpixel_shift_changes_pixels_and_still_passes():
    # y moved by about 1/50 of a pixel: Agg's antialiasing changes some pixels by a level or two.
    x = np.logspace(0, 3, 12)
    y = 1.3 / x
    before, after = png(curves(x, y)), png(curves(x, y * 1.0005))
    assert not np.array_equal(png_pixels(before), png_pixels(after))
    assert figure_difference(before, after) is None


def test_a_visible_change_fails():
    x = np.logspace(0, 3, 12)
    y = 1.3 / x
    moved = y.copy()
    moved[5] *= 1.05  # one marker moved by about 2 pixels
    why = figure_difference(png(curves(x, y)), png(curves(x, moved)))
    assert why is not None and f"more than {FIGURE_TOLERANCE}/255" in why
    J = np.eye(5) - 0.2
    J2 = J.copy()
    J2[1, 3] = 0.1  # one cell of the Jacobian: another colour and another number
    assert figure_difference(png(jacobian(J)), png(jacobian(J2))) is not None


def test_another_size_fails_and_says_so():
    line = lambda ax: ax.plot([0, 1], [0, 1])  # noqa: E731
    assert "figure size differs" in figure_difference(save(line, (5, 3.4)), save(line, (6, 3.4)))


def test_png_pixels_reads_a_notebook_string_and_raw_bytes():
    raw = png(lambda ax: ax.plot([0, 1], [1, 0]))
    assert np.array_equal(png_pixels(raw), png_pixels(base64.b64encode(raw).decode()))
    assert png_pixels(raw).dtype == np.uint8 and png_pixels(raw).shape[2] == 4


def test_second_env_changes_simd_numba_and_blas_threads_and_nothing_else():
    env = second_env()
    assert set(env) == {"NPY_DISABLE_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES",
                        "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    assert env["NUMBA_CPU_NAME"] == "generic" and env["NUMBA_CPU_FEATURES"] == ""
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__

    disabled = env["NPY_DISABLE_CPU_FEATURES"].split()
    assert disabled == simd_groups_found()
    assert set(disabled) <= set(__cpu_dispatch__) and not set(disabled) & set(__cpu_baseline__)
    first = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    assert int(env["OPENBLAS_NUM_THREADS"]) != first


@pytest.mark.skipif(not simd_groups_found(), reason="numpy finds no SIMD group above its baseline on this CPU")
def test_the_second_env_really_reaches_numpy_in_a_new_process():
    code = ("from numpy._core._multiarray_umath import __cpu_dispatch__ as d, __cpu_features__ as f;"
            "print(' '.join(k for k in d if f.get(k)))")
    out = subprocess.run([sys.executable, "-c", code], env=os.environ | second_env(), capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == ""
