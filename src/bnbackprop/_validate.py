"""Input validation shared by every public function: bad input gets a ValueError that says why."""

from __future__ import annotations

import math

import numpy as np

SHAPE_HELP = "expected x of shape (N, D) or (N, C, ...) with the channel on axis 1"


def as_float_array(a, name: str) -> np.ndarray:
    """Return `a` as a floating array: integers are cast to float64, anything else non-float is refused."""
    arr = np.asarray(a)
    if arr.dtype.kind in "iu":
        return arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise ValueError(
            f"{name} must hold real floating-point (or integer) numbers; got dtype {arr.dtype}"
        )
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Refuse NaN and infinity, which would spread silently through every reduction."""
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite; it holds {bad} NaN or infinite value(s)")


def check_input(x, name: str = "x") -> np.ndarray:
    """Check a batch: float, finite, and at least (N, C)."""
    arr = as_float_array(x, name)
    if arr.ndim < 2:
        raise ValueError(f"{name} has shape {arr.shape}; {SHAPE_HELP}")
    if arr.size == 0:
        raise ValueError(f"{name} has shape {arr.shape} with an empty axis; {SHAPE_HELP}")
    check_finite(arr, name)
    return arr


def reduce_axes(ndim: int) -> tuple[int, ...]:
    """Every axis but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def param_shape(ndim: int, channels: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against a batch: (1, C, 1, ...)."""
    return (1, channels) + (1,) * (ndim - 2)


def check_param(p, name: str, channels: int, dtype) -> np.ndarray:
    """Check a per-channel parameter of shape (C,)."""
    arr = as_float_array(p, name)
    if arr.shape != (channels,):
        raise ValueError(
            f"{name} has shape {arr.shape}; expected ({channels},), one value per channel of x"
        )
    check_finite(arr, name)
    return arr.astype(dtype, copy=False)


def is_real_number(v) -> bool:
    """A finite int or float (numpy's too), and not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def check_eps(eps) -> float:
    """eps must be a finite number >= 0."""
    if not is_real_number(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    return float(eps)


def check_ddof(ddof) -> int:
    """ddof is 0 (biased, PyTorch) or 1 (Bessel-corrected, makemore)."""
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise ValueError(f"ddof must be 0 (biased variance) or 1 (Bessel's correction); got {ddof!r}")
    return int(ddof)


def count_over(shape: tuple[int, ...], axes) -> int:
    """Number of values that a reduction over `axes` of an array of `shape` combines (1 for no axes)."""
    return math.prod(shape[a] for a in axes)


def count_per_channel(shape: tuple[int, ...]) -> int:
    """Number of values reduced per channel: N times the spatial sizes."""
    return count_over(shape, reduce_axes(len(shape)))


def check_training_batch(shape: tuple[int, ...]) -> int:
    """Training needs at least two values per channel, or the output is beta and dx is 0."""
    B = count_per_channel(shape)
    if B < 2:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {shape}: "
            "with one value per channel, xhat = 0, y = beta and dx = 0, so nothing can be learned "
            "through x. Use a batch of at least 2, or eval mode with running statistics."
        )
    return B


def check_dy(dy, y_shape: tuple[int, ...], dtype) -> np.ndarray:
    """dy must match y's shape and be finite."""
    arr = as_float_array(dy, "dy")
    if arr.shape != tuple(y_shape):
        raise ValueError(f"dy has shape {arr.shape}; expected {tuple(y_shape)}, the shape of y")
    check_finite(arr, "dy")
    return arr.astype(dtype, copy=False)


def check_axes(axes, ndim: int, name: str = "axes") -> tuple[int, ...]:
    """Axes must be distinct integers in [-ndim, ndim); return them sorted and non-negative."""
    try:
        raw = (axes,) if np.isscalar(axes) else tuple(axes)
    except TypeError:
        raw = None
    if raw is None or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in raw):
        raise ValueError(f"{name} must be an int or a tuple of ints, like (0, 2, 3); got {axes!r}")
    if any(not -ndim <= a < ndim for a in raw):
        raise ValueError(f"{name}={axes!r} is out of range for an array with {ndim} dimensions")
    fixed = tuple(sorted(int(a) % ndim for a in raw))
    if len(set(fixed)) != len(fixed):
        raise ValueError(f"{name}={axes!r} names an axis twice")
    return fixed


__all__ = [
    "SHAPE_HELP",
    "as_float_array",
    "check_axes",
    "check_ddof",
    "check_dy",
    "check_eps",
    "check_finite",
    "check_input",
    "check_param",
    "check_training_batch",
    "count_over",
    "count_per_channel",
    "is_real_number",
    "param_shape",
    "reduce_axes",
]
