"""Tuned batch norm backwards: the same results as `batchnorm.backward`, with fewer bytes moved.

The clear `batchnorm.backward` is the teaching version. Both functions here compute the same
formula, dx = a*dy + b*xhat + c with per-channel a = gamma*inv_s, b = -a*dgamma/(B - ddof) and
c = -a*dbeta/B, in two passes over memory:

1. read dy and xhat once, forming the two sums dbeta = sum(dy) and dgamma = sum(dy*xhat);
2. read dy and xhat again and write dx.

That is 5 array-sized transfers against 3 for `np.add(a, b, out=c)`: no two-pass backward can
beat 5/3 of np.add's time on arrays larger than the cache.

- `backward_blocked` is numpy only: BLAS matrix-vector products for the sums and cache-sized
  blocks of rows, so the temporaries of its seven to nine numpy calls per block stay in the L2
  cache. It stays about 4-5x above np.add out of cache, because each call is a separate sweep
  through the block, and its per-call cost loses to PyTorch on arrays that fit in the cache.
- `backward_fast` fuses each pass into one loop with numba, which numpy cannot express; that is
  what brings it near the 5/3 limit (see benchmarks/README.md for the measured ratios).

Dtypes, range, accuracy and refusals are those of `batchnorm` (see its docstring): float16 is
computed in float32 (numba has no float16), longdouble by `batchnorm.backward` (numba has no
longdouble either), and a result that overflows in the fast passes (detected inside pass 2, with
no extra memory traffic) is recomputed by the scale-safe `batchnorm.backward`.
"""

from __future__ import annotations

import numpy as np

from ._extras import require
from ._validate import check_finite, reduce_axes
from .batchnorm import Cache, _in_caller_dtype, backward, checked_dy

njit = require("numba", "fast", __name__).njit

# Bytes of one block of rows: a block of dy, of xhat, of dx and one temporary stay in the L2 cache,
# so every array is read from main memory once per pass however many numpy calls touch the block.
BLOCK_BYTES = 1 << 18


def _rows(a: np.ndarray) -> np.ndarray:
    """View a C-contiguous (N, C, ...) array as rows: (N, C) for 2-D input, (N*C, M) otherwise."""
    if a.ndim == 2:
        return a
    return a.reshape(a.shape[0] * a.shape[1], -1)


def _blocks(rows: np.ndarray):
    """(start, stop) of cache-sized blocks of rows."""
    n_rows = rows.shape[0]
    step = max(1, BLOCK_BYTES // (rows.shape[1] * rows.itemsize))
    return [(i, min(i + step, n_rows)) for i in range(0, n_rows, step)], min(step, n_rows)


def _sums(dy2, xhat2, blocks, tmp, by_row):
    """Pass 1: sum(dy) and sum(dy*xhat), per row (NCHW rows of H*W) or per column ((N, D)), by BLAS gemv."""
    n_rows, m = dy2.shape
    if by_row:
        ones = np.ones(m, dtype=dy2.dtype)
        s_dy, s_dyx = np.empty(n_rows, dtype=dy2.dtype), np.empty(n_rows, dtype=dy2.dtype)
    else:
        ones = np.ones(tmp.shape[0], dtype=dy2.dtype)
        s_dy, s_dyx = np.zeros(m, dtype=dy2.dtype), np.zeros(m, dtype=dy2.dtype)
    for i, j in blocks:
        t = tmp[: j - i]
        np.multiply(dy2[i:j], xhat2[i:j], out=t)
        if by_row:
            np.matmul(dy2[i:j], ones, out=s_dy[i:j])
            np.matmul(t, ones, out=s_dyx[i:j])
        else:
            s_dy += ones[: j - i] @ dy2[i:j]
            s_dyx += ones[: j - i] @ t
    return s_dy, s_dyx


def _apply(dy2, xhat2, coef, out2, blocks, tmp, by_row) -> bool:
    """Pass 2: dx = a*dy + b*xhat + c, block by block; by_row means one (a, b, c) per row. True if all finite."""
    a, b, c = coef
    finite = True
    for i, j in blocks:
        t, o = tmp[: j - i], out2[i:j]
        ai, bi, ci = (a[i:j], b[i:j], c[i:j]) if by_row else (a, b, c)
        np.multiply(dy2[i:j], ai, out=o)
        np.multiply(xhat2[i:j], bi, out=t)
        o += t
        o += ci
        finite = finite and bool(np.isfinite(o.sum()))  # the block is still in cache: no extra memory pass
    return finite


def _check_out(out, cache) -> np.ndarray:
    """A preallocated dx must have x's shape and dtype, be C-contiguous and writeable, and not overlap xhat."""
    shape, dtype = cache.xhat.shape, cache.x.dtype
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array of shape {shape} and dtype {dtype}; got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out has shape {out.shape} and dtype {out.dtype}; expected shape {shape} and dtype {dtype}, like x"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a C-contiguous, writeable array, like np.empty_like(x)")
    if np.may_share_memory(out, cache.xhat):
        raise ValueError("out overlaps cache.xhat, which the second pass still reads; pass a separate array (out=dy is fine)")
    return out


def _refuse_partial_overlap(out, dy):
    """out may be dy itself (each element is read before it is written), but not a shifted view of it."""
    if np.shares_memory(out, dy) and out.__array_interface__["data"][0] != dy.__array_interface__["data"][0]:
        raise ValueError("out overlaps dy only partly, so the second pass would read values it already wrote; "
                         "pass out=dy itself or a separate array")


def _check_dy_fast(dy, cache: Cache) -> np.ndarray:
    """Shape and dtype only: a finite check would cost a pass; a NaN or inf in dy reaches the sums and dx instead."""
    xhat = cache.xhat
    if type(dy) is np.ndarray and dy.shape == xhat.shape and dy.dtype == xhat.dtype == cache.x.dtype:
        return dy
    return checked_dy(dy, cache)


def _prepare(dy, cache, out):
    """Checked, C-contiguous (dy, xhat, out) for a batch norm cache, in the dtype the cache computes in."""
    if not isinstance(cache, Cache):
        raise ValueError(f"cache must be the Cache returned by batchnorm.forward; got {type(cache).__name__}")
    user_out = None if out is None else _check_out(out, cache)
    dy = np.ascontiguousarray(_check_dy_fast(dy, cache))
    xhat = cache.xhat
    if cache.axes != reduce_axes(xhat.ndim) or cache.param_axes != cache.axes:
        raise ValueError(
            f"this backward handles batch norm's axes {reduce_axes(xhat.ndim)} only; the cache has {cache.axes}"
        )
    if user_out is not None:
        _refuse_partial_overlap(user_out, dy)
    # float16 is computed in float32 (as `batchnorm.backward` does) and copied into the caller's out at the end.
    work_out = user_out if user_out is not None and user_out.dtype == xhat.dtype else np.empty(xhat.shape, xhat.dtype)
    return dy, np.ascontiguousarray(xhat), work_out


def _finish(dy, cache, grads, out, in_place=False):
    """(dx, dgamma, dbeta) in x's dtype, in `out` if given; grads=None (non-finite, or longdouble): the clear backward's."""
    if grads is None or not (np.isfinite(grads[1]).all() and np.isfinite(grads[2]).all()):
        check_finite(dy, "dy")
        if in_place:
            raise ValueError("dx overflowed in the fast pass, which already overwrote dy (out=dy); "
                             "call again without out to get the scale-safe result")
        dx, dgamma, dbeta = backward(dy, cache)  # rescales where needed; dy holds values of x's dtype
    else:
        dx, dgamma, dbeta = _in_caller_dtype(grads, cache)
    if out is not None and out is not dx:
        out[...] = dx
        dx = out
    return dx, dgamma, dbeta


def _coefficients(dy, cache, dbeta, dgamma, ch):
    """Per-channel (a, b, c) of dx = a*dy + b*xhat + c, from gamma*inv_s and the two sums."""
    a = cache.gamma.reshape(ch) * cache.inv_s.reshape(ch)
    one = cache.xhat.dtype.type(1)  # 1/B in the array's precision (a Python float would round longdouble's)
    return a, a * dgamma * -(one / (cache.B - cache.ddof)), a * dbeta * -(one / cache.B)


def backward_blocked(dy, cache: Cache, out=None):
    """numpy only: same (dx, dgamma, dbeta) as `batchnorm.backward`, two cache-blocked passes, BLAS sums."""
    user_out = out
    dy, xhat, out = _prepare(dy, cache, out)
    n, ch = xhat.shape[:2]
    by_row = xhat.ndim > 2
    dy2, xhat2, out2 = _rows(dy), _rows(xhat), _rows(out)
    blocks, step = _blocks(dy2)
    tmp = np.empty((step, dy2.shape[1]), dtype=dy2.dtype)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # _finish checks the result
        dbeta, dgamma = _sums(dy2, xhat2, blocks, tmp, by_row)
        if by_row:
            dbeta, dgamma = dbeta.reshape(n, ch).sum(0), dgamma.reshape(n, ch).sum(0)
    if not (np.isfinite(dbeta).all() and np.isfinite(dgamma).all()):
        return _finish(dy, cache, None, user_out)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # _finish checks the result
        coef = _coefficients(dy, cache, dbeta, dgamma, ch)
        if by_row:  # contiguous per-row coefficient tiles, one row per (n, c) pair
            coef = tuple(np.tile(v, n)[:, None] for v in coef)
        finite = _apply(dy2, xhat2, coef, out2, blocks, tmp, by_row)
    return _finish(dy, cache, (out, dgamma, dbeta) if finite else None, user_out, in_place=np.shares_memory(out, dy))


# Reassociation lets LLVM split each sum over SIMD lanes (a different but equally exact order);
# no 'nnan'/'ninf': a NaN in dy must reach the sums, where the finite check sees it.
_FLAGS = {"reassoc", "contract", "nsz"}


@njit(cache=True, fastmath=_FLAGS)
def _backward_cols_jit(dy, xhat, a, inv_bd, inv_b, out, dgamma, dbeta):
    """(N, D) with a = gamma*inv_s: column sums in one pass over the rows, then dx in a second pass."""
    n, d = dy.shape
    for i in range(n):
        for j in range(d):
            v = dy[i, j]
            dbeta[j] += v
            dgamma[j] += v * xhat[i, j]
    b, c = -a * dgamma * inv_bd, -a * dbeta * inv_b
    chk = dy[0, 0] * 0
    for i in range(n):
        for j in range(d):
            o = a[j] * dy[i, j] + b[j] * xhat[i, j] + c[j]
            out[i, j] = o
            chk += o * 0.0  # stays 0 unless some dx is inf or NaN; free beside the memory traffic
    return chk


@njit(cache=True, fastmath=_FLAGS)
def _backward_rows_jit(dy, xhat, a, inv_bd, inv_b, out, dgamma, dbeta):
    """(N*C, M) rows, row r in channel r % C: row sums, channel sums, then dx row by row."""
    ch = a.shape[0]
    for r in range(dy.shape[0]):
        s_dy, s_dyx = dy[r, 0] * 0, dy[r, 0] * 0  # zeros of dy's dtype; a NaN in dy still propagates
        for m in range(dy.shape[1]):
            v = dy[r, m]
            s_dy += v
            s_dyx += v * xhat[r, m]
        dbeta[r % ch] += s_dy
        dgamma[r % ch] += s_dyx
    b, c = -a * dgamma * inv_bd, -a * dbeta * inv_b
    chk = dy[0, 0] * 0
    for r in range(dy.shape[0]):
        k = r % ch
        ak, bk, ck = a[k], b[k], c[k]
        for m in range(dy.shape[1]):
            o = ak * dy[r, m] + bk * xhat[r, m] + ck
            out[r, m] = o
            chk += o * 0.0  # stays 0 unless some dx is inf or NaN; free beside the memory traffic
    return chk


def backward_fast(dy, cache: Cache, out=None):
    """Same (dx, dgamma, dbeta) as `batchnorm.backward`: one fused pass for the sums, one for dx (numba)."""
    user_out = out
    dy, xhat, out = _prepare(dy, cache, out)
    if xhat.dtype.type not in (np.float32, np.float64):
        return _finish(dy, cache, None, user_out)
    ch = xhat.shape[1]
    dgamma, dbeta = np.zeros(ch, xhat.dtype), np.zeros(ch, xhat.dtype)
    kernel = _backward_rows_jit if xhat.ndim > 2 else _backward_cols_jit
    inv_bd, inv_b = xhat.dtype.type(1.0 / (cache.B - cache.ddof)), xhat.dtype.type(1.0 / cache.B)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # _finish checks the result
        a = cache.gamma.reshape(ch) * cache.inv_s.reshape(ch)
    chk = kernel(_rows(dy), _rows(xhat), a, inv_bd, inv_b, _rows(out), dgamma, dbeta)
    return _finish(dy, cache, (out, dgamma, dbeta) if np.isfinite(chk) else None, user_out, in_place=np.shares_memory(out, dy))


__all__ = ["backward_blocked", "backward_fast"]
