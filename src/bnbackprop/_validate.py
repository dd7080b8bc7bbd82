"""Input validation shared by every public function: bad input gets a ValueError that says why."""

from __future__ import annotations

import math

import numpy as np

SHAPE_HELP = "expected x of shape (N, D) or (N, C, ...) with the channel on axis 1"


def refuse_masked(a, name: str) -> None:
    """A masked array's mask would be dropped silently by every numpy reduction used here."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, and its mask would be ignored; "
                        f"pass a plain array, for example {name}.filled(value) or only the unmasked rows")


def real_array(a, name: str) -> np.ndarray:
    """a as a float64 array; complex, masked and non-numeric values are refused rather than silently cut."""
    refuse_masked(a, name)
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (float or int); got dtype {arr.dtype}")
    return arr.astype(float)


def as_float_array(a, name: str) -> np.ndarray:
    """Return `a` as a floating array: integers are cast to float64, anything else non-float is refused."""
    refuse_masked(a, name)
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


def compute_dtype(dtype) -> np.dtype:
    """The dtype the statistics are accumulated in: float32 for float16 (as PyTorch does), else the dtype itself."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def cast_checked(arr: np.ndarray, name: str, dtype) -> np.ndarray:
    """Cast to `dtype`, then check finiteness: a value beyond the dtype's range becomes inf in the cast."""
    dtype = np.dtype(dtype)
    with np.errstate(over="ignore"):  # the overflow is reported below, naming the argument
        out = arr.astype(dtype, copy=False)
    if out.dtype != arr.dtype and not np.all(np.isfinite(out)):
        big = float(np.max(np.abs(arr[~np.isfinite(out)])))
        raise ValueError(f"{name} holds values beyond the range of {dtype} (|{name}| up to {big:.3g} > "
                         f"{float(np.finfo(dtype).max):.3g}), the dtype of x; scale {name} down or pass x as float64")
    return out


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
    # A copy: a cache must not change when the caller later updates the parameter in place.
    return np.array(cast_checked(arr, name, dtype), copy=True)


def is_real_number(v) -> bool:
    """A finite int or float (numpy's too), and not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def check_eps(eps, dtype=None) -> float:
    """eps must be a finite number >= 0 (and within the range of `dtype`, the dtype the statistics use)."""
    if not is_real_number(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    if dtype is not None and eps > float(np.finfo(compute_dtype(dtype)).max):
        raise ValueError(f"eps = {eps!r} is beyond the range of {compute_dtype(dtype)}, the dtype of the statistics; "
                         "use a smaller eps, like 1e-5")
    return float(eps)


def check_ddof(ddof) -> int:
    """ddof is 0 (biased, PyTorch) or 1 (Bessel-corrected, makemore)."""
    is_int = isinstance(ddof, (int, np.integer)) and not isinstance(ddof, (bool, np.bool_))
    if not is_int or ddof not in (0, 1):
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


def check_dy(dy, y_shape: tuple[int, ...], dtype, absmax_axes=None):
    """dy must match y's shape and be finite; with absmax_axes, also return max|dy| over them (one pass for both)."""
    arr = as_float_array(dy, "dy")
    if arr.shape != tuple(y_shape):
        raise ValueError(f"dy has shape {arr.shape}; expected {tuple(y_shape)}, the shape of y")
    if absmax_axes is None:
        check_finite(arr, "dy")
        return cast_checked(arr, "dy", dtype)
    absmax = np.abs(arr).max(axis=absmax_axes, keepdims=True)
    if not np.isfinite(absmax.max()):  # NaN and inf reach the max
        check_finite(arr, "dy")
    return cast_checked(arr, "dy", dtype), absmax


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
