"""How `make test` checks the notebooks: figures within a pixel tolerance, and a second numeric environment.

Used by the root conftest.py (nbval) and by tests/test_notebook_checks.py; the README's section on
stored outputs explains both.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# Largest allowed difference of one colour channel of one pixel, in levels of 255. A last-bit change
# in plotted data moves an antialiased edge by at most Agg's 1/256 px step: a level or two. A change
# a reader can see (a line or marker moved by a pixel, another colour) changes some pixel by far more.
FIGURE_TOLERANCE = 8


def png_pixels(png: str | bytes) -> np.ndarray:
    """Decode a PNG (raw bytes, or base64 text as stored in a notebook) to an RGBA uint8 array."""
    raw = base64.b64decode(png) if isinstance(png, str) else png
    with Image.open(io.BytesIO(raw)) as image:
        return np.asarray(image.convert("RGBA"))


def figure_difference(reference: str | bytes, test: str | bytes, tolerance: int = FIGURE_TOLERANCE) -> str | None:
    """None when two PNGs show the same figure (every channel within `tolerance` levels), else why not."""
    ref, new = png_pixels(reference), png_pixels(test)
    if ref.shape != new.shape:
        return f"figure size differs: stored {ref.shape[1]}x{ref.shape[0]} px, new {new.shape[1]}x{new.shape[0]} px"
    diff = np.abs(ref.astype(np.int16) - new.astype(np.int16)).max(axis=2)
    if diff.max() <= tolerance:
        return None
    row, col = np.unravel_index(diff.argmax(), diff.shape)
    return (f"{int((diff > tolerance).sum())} pixels differ by more than {tolerance}/255 "
            f"(up to {int(diff.max())}/255, e.g. at x={col}, y={row})")


def blas_threads() -> int:
    """Threads the BLAS that numpy loaded will use in a process started with this environment."""
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)


def simd_groups_found() -> list[str]:
    """numpy's dispatch targets (the SIMD groups above its baseline) that this CPU has, e.g. X86_V4."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [group for group in __cpu_dispatch__ if __cpu_features__.get(group)]


def second_env() -> dict[str, str]:
    """Environment variables of the second notebook run: other SIMD paths, generic numba, other BLAS threads.

    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are left as the machine sets them: some processors need them.
    """
    threads = "1" if blas_threads() > 1 else "2"
    return {
        "NPY_DISABLE_CPU_FEATURES": " ".join(simd_groups_found()),
        "NUMBA_CPU_NAME": "generic",
        "NUMBA_CPU_FEATURES": "",
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }

