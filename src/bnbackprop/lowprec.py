"""Batch norm in low precision: storage and accumulation dtypes chosen separately, and stable running statistics.

Every sum here is a running sum (`running_sum`): one addition after another, each rounded to the
accumulation dtype, as a simple loop computes it. numpy's own `np.sum` does not do that for
float16 (it adds pairwise, in float32 inside each block), so it would hide what float16
accumulation costs. Elementwise operations round once each (IEEE), so every result here is the
same on every CPU. bfloat16 comes from the `ml_dtypes` package (the `[lowprec]` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._extras import require
from ._validate import check_ddof, check_eps, check_finite, check_training_batch, param_shape, reduce_axes


ml_dtypes = require("ml_dtypes", "lowprec", "bnbackprop.lowprec")

DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}


def as_dtype(dtype, name: str = "dtype") -> np.dtype:
    """One of DTYPES, given by name or dtype."""
    try:
        key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        key = None
    if key not in DTYPES:
        raise TypeError(f"{name} must be one of {sorted(DTYPES)}; got {dtype!r}")
    return DTYPES[key]


def unit_roundoff(dtype) -> float:
    """u = 2**-p for a dtype with p significand bits: the largest relative error of one rounding."""
    bits = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}[as_dtype(dtype).name]
    return 2.0**-bits


def default_accumulator(dtype) -> np.dtype:
    """float32 for the 16-bit types (PyTorch's choice for half and bfloat16), the dtype itself otherwise."""
    dtype = as_dtype(dtype)
    return DTYPES["float32"] if dtype.itemsize == 2 else dtype


def running_sum(a, axes, acc) -> np.ndarray:
    """Sum over `axes` one value after another, each addition rounded to dtype `acc`; keeps dims."""
    a = np.asarray(a).astype(as_dtype(acc, "acc"))
    axes = tuple(axes)
    rest = [ax for ax in range(a.ndim) if ax not in axes]
    moved = np.transpose(a, axes + tuple(rest))
    flat = moved.reshape((-1,) + tuple(a.shape[ax] for ax in rest))
    total = np.add.accumulate(flat, axis=0)[-1]  # accumulate is sequential: out[i] = out[i-1] + a[i]
    return total.reshape(tuple(1 if ax in axes else n for ax, n in enumerate(a.shape)))


@dataclass(frozen=True)
class LowCache:
    """What the low-precision forward keeps, in the accumulation dtype."""

    x: np.ndarray
    mu: np.ndarray
    xmu: np.ndarray
    inv_s: np.ndarray
    xhat: np.ndarray
    gamma: np.ndarray
    axes: tuple[int, ...]
    B: int
    ddof: int
    dtype: np.dtype  # storage dtype of x, y, dy, dx
    acc: np.dtype


def _check_stored(a, name, dtype=None):
    """A finite array in one of the four dtypes (or in `dtype`, if given)."""
    arr = np.asarray(a)
    as_dtype(arr.dtype, f"{name}.dtype")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype}; expected {dtype}, the dtype of x")
    check_finite(arr.astype(np.float64), name)
    return arr


def forward_lowprec(x, gamma, beta, eps=1e-5, ddof=0, acc=None):
    """Training-mode batch norm on x stored in its dtype, every sum and step in dtype `acc`; y in x's dtype."""
    x = _check_stored(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x has shape {x.shape}; expected (N, D) or (N, C, ...) with the channel on axis 1")
    check_training_batch(x.shape)
    eps, ddof = check_eps(eps), check_ddof(ddof)
    if eps == 0:
        raise ValueError("eps must be > 0 here: in low precision a small variance can round to 0")
    acc = default_accumulator(x.dtype) if acc is None else as_dtype(acc, "acc")
    axes, shape, C = reduce_axes(x.ndim), param_shape(x.ndim, x.shape[1]), x.shape[1]
    params = []
    for p, name in ((gamma, "gamma"), (beta, "beta")):
        arr = _check_stored(p, name, x.dtype)
        if arr.shape != (C,):
            raise ValueError(f"{name} has shape {arr.shape}; expected ({C},), one value per channel of x")
        params.append(arr.astype(acc).reshape(shape))
    gamma_a, beta_a = params
    B = x.size // C
    with np.errstate(all="ignore"):  # overflow is checked below, where it can be named
        xa = x.astype(acc)
        mu = running_sum(xa, axes, acc) / acc.type(B)
        xmu = xa - mu
        var = running_sum(xmu * xmu, axes, acc) / acc.type(B - ddof)
        inv_s = acc.type(1) / np.sqrt(var + acc.type(eps))
        xhat = xmu * inv_s
        y = (gamma_a * xhat + beta_a).astype(x.dtype)
    for a in (mu, var, y):  # an overflowed var gives inv_s = 0 and a finite, wrong y
        _refuse_overflow(a, "forward", acc, x.dtype)
    return y, LowCache(xa, mu, xmu, inv_s, xhat, gamma_a, axes, B, ddof, x.dtype, acc)


def _refuse_overflow(a, where, acc, dtype):
    """A sum or a result beyond the dtype's range gives inf or NaN: say so instead of returning it."""
    if not np.all(np.isfinite(a.astype(np.float64))):
        raise ValueError(f"the {where} overflowed: a sum or result exceeds the range of the accumulation dtype "
                         f"{acc} or the storage dtype {dtype} (float16 ends at 65504). Accumulate in float32: acc='float32'")


def backward_lowprec(dy, cache, centered=True):
    """The compact backward in cache.acc; centered=False takes sum(g*x) - mu*sum(g) for sum(g*(x - mu))."""
    if not isinstance(cache, LowCache):
        raise ValueError(f"cache must be the LowCache that forward_lowprec returned; got {type(cache).__name__}")
    dy = _check_stored(dy, "dy", cache.dtype)
    if dy.shape != cache.x.shape:
        raise ValueError(f"dy has shape {dy.shape}; expected {cache.x.shape}, the shape of y")
    acc, axes = cache.acc, cache.axes
    with np.errstate(all="ignore"):  # overflow is checked below, where it can be named
        dya = dy.astype(acc)
        g = cache.gamma * dya
        sum_g, sum_gxmu = backward_sums(dy, cache, centered)
        sum_gxhat = sum_gxmu * cache.inv_s
        dx = (g - sum_g / acc.type(cache.B) - cache.xhat * (sum_gxhat / acc.type(cache.B - cache.ddof))) * cache.inv_s
        grads = (dx, running_sum(dya * cache.xhat, axes, acc).ravel(), running_sum(dya, axes, acc).ravel())
        grads = tuple(a.astype(cache.dtype) for a in grads)
    for a in (sum_g, sum_gxmu) + grads:
        _refuse_overflow(a, "backward", acc, cache.dtype)
    return grads


def backward_sums(dy, cache, centered=True):
    """sum(g) and sum(g * (x - mu)) as written (centered), or as sum(g*x) - mu*sum(g), which cancels when |mu| >> spread."""
    with np.errstate(all="ignore"):  # the callers check for overflow
        g = cache.gamma * np.asarray(dy).astype(cache.acc)
        sum_g = running_sum(g, cache.axes, cache.acc)
        if centered:
            return sum_g, running_sum(g * cache.xmu, cache.axes, cache.acc)
        return sum_g, running_sum(g * cache.x, cache.axes, cache.acc) - cache.mu * sum_g


def variance_one_pass(x, acc, axis=0):
    """(sum(x**2) - sum(x)**2 / n) / n with running sums in `acc`: the textbook formula that cancels."""
    acc = as_dtype(acc, "acc")
    xa = np.asarray(x).astype(acc)
    n = acc.type(xa.shape[axis])
    with np.errstate(all="ignore"):  # overflow is checked below, where it can be named
        s1, s2 = running_sum(xa, (axis,), acc), running_sum(xa * xa, (axis,), acc)
        var = np.squeeze((s2 - s1 * s1 / n) / n, axis=axis)
    _refuse_overflow(var, "one-pass variance", acc, xa.dtype)
    return var


def variance_two_pass(x, acc, axis=0):
    """sum((x - mean)**2) / n with running sums in `acc`: subtract the mean first."""
    return moments_two_pass(x, acc, axis).var()


@dataclass(frozen=True)
class Moments:
    """Count, mean and m2 = sum of squared deviations from the mean, per channel."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    def var(self, ddof: int = 0) -> np.ndarray:
        """m2 / (count - ddof)."""
        ddof = check_ddof(ddof)
        if self.count - ddof < 1:
            raise ValueError(f"var with ddof={ddof} needs count > {ddof}; count is {self.count}")
        return self.m2 / self.mean.dtype.type(self.count - ddof)


def welford(x, acc, axis=0) -> Moments:
    """Welford's update, one value at a time along `axis`, in dtype `acc`."""
    acc = as_dtype(acc, "acc")
    rows = np.moveaxis(np.asarray(x).astype(acc), axis, 0)
    if rows.shape[0] == 0:
        raise ValueError("welford needs at least one value along axis")
    mean, m2 = np.zeros(rows.shape[1:], acc), np.zeros(rows.shape[1:], acc)
    with np.errstate(all="ignore"):  # overflow is checked below, where it can be named
        for k, row in enumerate(rows, start=1):
            delta = row - mean
            mean = mean + delta / acc.type(k)
            m2 = m2 + delta * (row - mean)  # the old and the new deviation: no cancellation
    _refuse_overflow(m2, "Welford update", acc, rows.dtype)
    return Moments(rows.shape[0], mean, m2)


def chan_merge(a: Moments, b: Moments) -> Moments:
    """Chan, Golub and LeVeque's pairwise update: the moments of two groups combined, without revisiting data."""
    if not isinstance(a, Moments) or not isinstance(b, Moments):
        raise TypeError("chan_merge takes two Moments (from welford, moments_two_pass or chan_merge)")
    B_ab = a.count + b.count  # B_a + B_b values in all (the name table's letters, as in chapters 8 and 14)
    dtype = a.mean.dtype
    delta = b.mean - a.mean
    mean = a.mean + delta * dtype.type(b.count / B_ab)
    m2 = a.m2 + b.m2 + delta * delta * dtype.type(a.count * b.count / B_ab)
    return Moments(B_ab, mean, m2)


def moments_two_pass(x, acc, axis=0) -> Moments:
    """The moments of one group by two passes (mean, then squared deviations), in `acc`."""
    acc = as_dtype(acc, "acc")
    xa = np.moveaxis(np.asarray(x).astype(acc), axis, 0)
    B = xa.shape[0]
    with np.errstate(all="ignore"):  # overflow is checked below, where it can be named
        mean = running_sum(xa, (0,), acc)[0] / acc.type(B)
        xmu = xa - mean
        m2 = running_sum(xmu * xmu, (0,), acc)[0]
    _refuse_overflow(m2, "two-pass variance", acc, xa.dtype)
    return Moments(B, mean, m2)


def moments_in_chunks(x, chunks: int, acc, axis=0) -> Moments:
    """Split along `axis` into `chunks` groups (as devices would hold them), two-pass each, merge with Chan."""
    xs = np.array_split(np.moveaxis(np.asarray(x), axis, 0), chunks)
    if chunks < 1 or any(len(c) == 0 for c in xs):
        raise ValueError(f"chunks must be between 1 and the number of values along axis; got {chunks}")
    parts = [moments_two_pass(c, acc) for c in xs]
    while len(parts) > 1:  # merge neighbours pairwise, as an all-reduce tree does
        parts = [chan_merge(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


__all__ = [
    "DTYPES",
    "LowCache",
    "Moments",
    "as_dtype",
    "backward_lowprec",
    "backward_sums",
    "chan_merge",
    "default_accumulator",
    "forward_lowprec",
    "moments_in_chunks",
    "moments_two_pass",
    "running_sum",
    "unit_roundoff",
    "variance_one_pass",
    "variance_two_pass",
    "welford",
]
