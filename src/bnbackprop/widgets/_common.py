"""Pieces every widget shares: reading typed numbers, and a figure as PNG bytes for an Image widget."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np

from .._validate import check_finite


def parse_values(text, name: str) -> np.ndarray:
    """Read comma-separated numbers such as '1, 2.5, -3' into a 1-D float array."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a string of comma-separated numbers like '1, 2.5, -3'; got {type(text).__name__}")
    values = []
    for k, item in enumerate((item.strip() for item in text.split(",")), start=1):
        try:
            values.append(float(item))
        except ValueError:
            shown = f"'{item}'" if item else "an empty item"
            raise ValueError(f"{name}: could not read {shown} (item {k}) as a number; "
                             "expected comma-separated numbers like '1, 2.5, -3'") from None
    arr = np.array(values)
    check_finite(arr, name)
    return arr


def figure_png(fig, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it, so it is not also shown inline and redraws do not pile up."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


__all__ = ["figure_png", "parse_values"]
