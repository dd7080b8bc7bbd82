"""Tuned batch norm backwards: the same results as `batchnorm.backward`, with fewer bytes moved.

The clear `batchnorm.backward` is the teaching version. Both functions here compute the same
formula, dx = a*dy + b*xhat + c with per-channel a = gamma*inv_s, b = -a*dgamma/(B - ddof) and
c = -a*dbeta/B, in two passes over memory:

1. read dy and xhat once, forming the two sums dbeta = sum(dy) and dgamma = sum(dy*xhat);
2. read dy and xhat again and write dx.

That is 5 array-sized transfers against 3 for `np.add(a, b, out=c)`: counting whole arrays, a
two-pass backward takes about 5/3 of np.add's time or more on arrays larger than the cache (the
"two-pass limit" of chapter 11). An ordinary store also reads its cache line first, so np.add
really moves 4 arrays and a backward 6, a floor of 1.5; for arrays from STREAM_MIN_BYTES
(both layouts) the second pass writes dx with non-temporal stores (`_nontemporal`), which skip that read: 5
against 4, a floor of 1.25. `forward_fast` writes y with the same pass from FORWARD_STREAM_MIN_BYTES (where
gamma and s are in range).

- `backward_blocked` is numpy only: BLAS matrix-vector products for the sums and cache-sized
  blocks of rows, so the temporaries of its seven to nine numpy calls per block stay in the L2
  cache. It stays about 4-5x above np.add out of cache, because each call is a separate sweep
  through the block, and its per-call cost loses to PyTorch on arrays that fit in the cache.
- `backward_fast` fuses each pass into one loop with numba, which numpy cannot express; that is
  what brings it near the 5/3 limit (see benchmarks/README.md for the measured ratios).

Dtypes, range, accuracy and refusals are those of `batchnorm` (see its docstring): float16 is
computed in float32 (numba has no float16), longdouble by `batchnorm.backward` (numba has no
longdouble either), and a result that overflows in the fast passes (detected inside pass 2, with
no extra memory traffic), or whose factors or first-pass sums fall below the normal numbers though the
exact ones are not 0 (a tiny gamma/s, a tiny dy; `_coef_normal`), is recomputed by the scale-safe
`batchnorm.backward`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._extras import require
from ._validate import check_finite, reduce_axes
from .batchnorm import Cache, _in_caller_dtype, _in_window, _window, backward, checked_dy, forward

numba = require("numba", "fast", __name__)
njit = numba.njit
from ._nontemporal import (  # noqa: E402 - needs numba
    VECTOR_BYTES,
    stream_apply_1row,
    stream_apply_2rows,
    stream_apply_row,
    stream_fence,
)
from ._prefetch import APPLY_AHEAD, SUMS_AHEAD, sums_4rows  # noqa: E402 - needs numba

# Bytes of one block of rows: a block of dy, of xhat, of dx and one temporary stay in the L2 cache,
# so every array is read from main memory once per pass however many numpy calls touch the block.
BLOCK_BYTES = 1 << 18


def _lazy(name: str) -> property:
    """A Cache field that forward_fast leaves unwritten: xmu = x - mu and xhat = xmu*inv_s, computed when first read."""

    def read(cache):
        if cache.__dict__[name] is None:
            xmu = cache.x - cache.mu  # the same two roundings as `forward`, so the same values
            cache.__dict__["xmu"], cache.__dict__["xhat"] = xmu, xmu * cache.inv_s
        return cache.__dict__[name]

    def write(cache, value):  # the frozen dataclass's __init__ sets every field through object.__setattr__
        cache.__dict__[name] = value

    return property(read, write, doc=f"{name}, computed from x, mu and inv_s when first read")


class LazyCache(Cache):
    """forward_fast's Cache: it keeps x itself (a C-contiguous copy only if x was not), and xmu and xhat are
    computed from x when first read.

    Like PyTorch, which saves x and recomputes xhat in its backward, forward_fast writes only y. So x must not
    be changed in place before the backward: nothing here detects it (PyTorch's autograd does, with a version
    counter), and `backward_fast` would mix the new x with the old statistics. `forward_fast(x.copy(), ...)`
    keeps x safe at the cost of one copy.
    """

    xmu = _lazy("xmu")
    xhat = _lazy("xhat")

    def computed(self) -> bool:
        """Have xmu and xhat been computed (read by someone) yet?"""
        return self.__dict__["xhat"] is not None

    @classmethod
    def _from_fields(cls, *values) -> LazyCache:
        """The same object as cls(*values), without the frozen dataclass's per-field object.__setattr__ calls."""
        cache = object.__new__(cls)
        cache.__dict__.update(zip(_CACHE_FIELDS, values))
        return cache


_CACHE_FIELDS = tuple(f.name for f in dataclasses.fields(Cache))


def _rows(a: np.ndarray) -> np.ndarray:
    """View a C-contiguous (N, C, ...) array as rows: (N, C) for 2-D input, (N*C, M) otherwise."""
    if a.ndim == 2:
        return a
    return a.reshape(a.shape[0] * a.shape[1], -1)


def _frozen(*arrays: np.ndarray) -> list[np.ndarray]:
    """Read-only views of the kernels' inputs: numba compiles a kernel once per argument type, and a writeable
    and a read-only array are two types, so a caller's read-only dy would otherwise cost a second compile."""
    views = [a.view() for a in arrays]
    for v in views:
        v.flags.writeable = False
    return views


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
    """A preallocated dx must have x's shape and dtype, and be C-contiguous and writeable."""
    shape, dtype = cache.x.shape, cache.x.dtype
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array of shape {shape} and dtype {dtype}; got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out has shape {out.shape} and dtype {out.dtype}; expected shape {shape} and dtype {dtype}, like x"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a C-contiguous, writeable array, like np.empty_like(x)")
    return out


def _refuse_overlap(out, dy, src, name):
    """out may be dy itself (each element is read before it is written), but not a shifted view of it, nor `src`."""
    if np.may_share_memory(out, src):
        raise ValueError(f"out overlaps {name}, which the second pass still reads; pass a separate array (out=dy is fine)")
    if np.shares_memory(out, dy) and out.__array_interface__["data"][0] != dy.__array_interface__["data"][0]:
        raise ValueError("out overlaps dy only partly, so the second pass would read values it already wrote; "
                         "pass out=dy itself or a separate array")


def _check_dy_fast(dy, cache: Cache) -> np.ndarray:
    """Shape and dtype only: a finite check would cost a pass; a NaN or inf in dy reaches the sums and dx instead."""
    if type(dy) is np.ndarray and dy.shape == cache.x.shape and dy.dtype == cache.x.dtype == cache.inv_s.dtype:
        return dy
    return checked_dy(dy, cache)


def _source(cache: Cache):
    """(src, shift, scale) with xhat = (src - shift)*scale per channel: x for an in-range LazyCache, else xhat, 0, 1."""
    ch, dtype = cache.x.shape[1], cache.inv_s.dtype
    # x - mu carries a factor s that xhat does not: only with s and gamma near 1 (in_range) can the products
    # dy*(x - mu) and b*inv_s neither overflow nor underflow where the stored-xhat path would not
    if isinstance(cache, LazyCache) and not cache.computed() and cache.in_range:
        return (np.ascontiguousarray(cache.x), cache.mu.reshape(ch), cache.inv_s.reshape(ch),
                "x (forward_fast's cache keeps x itself)")
    return np.ascontiguousarray(cache.xhat), np.zeros(ch, dtype), np.ones(ch, dtype), "cache.xhat"


def _prepare(dy, cache, out, lazy=True):
    """Checked, C-contiguous (dy, (src, shift, scale), out) for a batch norm cache, in the dtype it computes in."""
    if not isinstance(cache, Cache):
        raise ValueError(f"cache must be the Cache returned by batchnorm.forward; got {type(cache).__name__}")
    user_out = None if out is None else _check_out(out, cache)
    dy = np.ascontiguousarray(_check_dy_fast(dy, cache))
    ndim = cache.x.ndim
    if cache.axes != reduce_axes(ndim) or cache.param_axes != cache.axes:
        raise ValueError(f"this backward handles batch norm's axes {reduce_axes(ndim)} only; the cache has {cache.axes}")
    if not lazy:
        cache.xhat  # noqa: B018 (computes a LazyCache's xhat, so that _source returns it)
    src, shift, scale, name = _source(cache)
    if user_out is not None:
        _refuse_overlap(user_out, dy, src, name)
    # float16 is computed in float32 (as `batchnorm.backward` does) and copied into the caller's out at the end.
    dtype = cache.inv_s.dtype
    work_out = user_out if user_out is not None and user_out.dtype == dtype else np.empty(cache.x.shape, dtype)
    return dy, (src, shift, scale), work_out


def _finish(dy, cache, grads, out, in_place=False):
    """(dx, dgamma, dbeta) in x's dtype, in `out` if given; grads=None (non-finite, or longdouble): the clear backward's."""
    if grads is None or not (np.isfinite(grads[1]).all() and np.isfinite(grads[2]).all()):
        if in_place:  # checked first: dy now holds the overflowed dx, so a finite check would blame the caller's dy
            raise ValueError("dx overflowed in the fast pass, which already overwrote dy (out=dy); "
                             "call again without out to get the scale-safe result")
        check_finite(dy, "dy")
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
    one = cache.inv_s.dtype.type(1)  # 1/B in the array's precision (a Python float would round longdouble's)
    return a, a * dgamma * -(one / (cache.B - cache.ddof)), a * dbeta * -(one / cache.B)


def _coefficients_normal(coef, dgamma, dbeta, gamma, B) -> bool:
    """`_coef_normal`'s rule, in numpy, for backward_blocked's (a, b, c) and sums (all in the array's dtype)."""
    a, b, c = coef
    tiny = np.finfo(a.dtype).tiny
    lost = ((np.abs(dgamma) < B * tiny) & (dgamma != 0)) | ((gamma != 0) & (
        (np.abs(a) < tiny) | ((np.abs(b) < tiny) & (dgamma != 0)) | ((np.abs(c) < tiny) & (dbeta != 0))))
    return not lost.any()


def backward_blocked(dy, cache: Cache, out=None):
    """numpy only: same (dx, dgamma, dbeta) as `batchnorm.backward`, two cache-blocked passes, BLAS sums."""
    user_out = out
    dy, (xhat, _, _), out = _prepare(dy, cache, out, lazy=False)
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
        if not _coefficients_normal(coef, dgamma, dbeta, cache.gamma.reshape(ch), cache.B):
            return _finish(dy, cache, None, user_out)  # `backward` rescales
        if by_row:  # contiguous per-row coefficient tiles, one row per (n, c) pair
            coef = tuple(np.tile(v, n)[:, None] for v in coef)
        finite = _apply(dy2, xhat2, coef, out2, blocks, tmp, by_row)
    return _finish(dy, cache, (out, dgamma, dbeta) if finite else None, user_out, in_place=np.shares_memory(out, dy))


# Reassociation lets LLVM split each sum over SIMD lanes (a different but equally exact order);
# no 'nnan'/'ninf': a NaN in dy must reach the sums, where the finite check sees it.
_FLAGS = {"reassoc", "contract", "nsz"}
# The row loops are inlined (inline="always") into the kernels that call them, which use the same
# _FLAGS (an inlined loop takes its caller's flags): each is compiled inside each kernel, and not also
# as a function of its own (a few seconds less of numba compiling per CPU build). The float operations
# outside them that must round as written (`_col_shift`, `_statistics`, `_coef`, ...) are functions of
# their own with fastmath=False said explicitly: numba compiles a function that names no flags with
# those of the kernel that calls it.
# Partial sums in the array's dtype cover at most this many rows (or one NCHW row) before they join
# float64 totals: float32 rounding then grows with 64 (split over the SIMD lanes), not with N.
ROWS_PER_BLOCK = 64
# Below this many bytes per array the parallel kernels run on one thread. In a sweep of sizes on the
# benchmark machine (2-core AMD EPYC, benchmarks/README.md) a second thread cost time at 1 MiB and below,
# where waking it costs more than half the work saves, and paid off above 2 MiB; at 2 MiB itself the gain
# came and went between runs.
PARALLEL_MIN_BYTES = 1 << 21
# From this many bytes per array, the second pass (either layout) writes dx with non-temporal stores (see
# `_nontemporal`): dx then goes to memory without each line first being read. 32 MiB is the last-level
# cache of the benchmark machine; below it, dx may still be in the cache when the caller reads it. The
# streamed (N, D) pass also prefetches the rows ahead (`_prefetch`); the NCHW one reads long rows in order.
STREAM_MIN_BYTES = 1 << 25
# From this many bytes per array, the (N, D) first pass prefetches the rows ahead. In timings of the first
# pass on the benchmark machine the prefetching loop took 15-19 % less time than the plain one at 16 and
# 32 MiB per array, about the same at 8 MiB (float64: 9 % less to 2 % more), and 11-24 % more at 4 MiB
# and below.
PREFETCH_MIN_BYTES = 1 << 24
# From this many bytes per array, `forward_fast` writes y with the same non-temporal stores. Its second
# pass holds two arrays, x and y: from half the last-level cache each, y cannot all stay cached beside x.
FORWARD_STREAM_MIN_BYTES = STREAM_MIN_BYTES // 2


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _sweep_sums(dy, src, shift, part_b, part_g, i, j0, j1):
    """Rows i..i+3, columns j0:j1: part_b += sum(dy), part_g += sum(dy*(src - shift)) per column."""
    for j in range(j0, j1):
        v0, v1, v2, v3 = dy[i, j], dy[i + 1, j], dy[i + 2, j], dy[i + 3, j]
        h = shift[j]
        part_b[j] += (v0 + v1) + (v2 + v3)
        part_g[j] += ((v0 * (src[i, j] - h) + v1 * (src[i + 1, j] - h))
                      + (v2 * (src[i + 2, j] - h) + v3 * (src[i + 3, j] - h)))


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _col_sums(dy, src, shift, scale, i0, i1, dgamma, dbeta, prefetch):
    """(N, D) rows i0:i1: dbeta += sum(dy), dgamma += sum(dy*xhat) per column, xhat = (src - shift)*scale;
    with `prefetch`, the whole vectors of each sweep in LLVM IR while the next sweep's rows are prefetched."""
    n, d = dy.shape
    lanes = VECTOR_BYTES // dy.itemsize
    part_b, part_g = np.zeros(d, dy.dtype), np.zeros(d, dy.dtype)
    for b0 in range(i0, i1, ROWS_PER_BLOCK):
        b1 = min(b0 + ROWS_PER_BLOCK, i1)
        i = b0
        while i + 4 <= b1:  # four rows per sweep: each partial sum is loaded and stored once per 4 rows
            # two separate loops: a single loop whose start was not a constant 0 made backward_fast 2-3 times
            # slower in the cache, in timings on the benchmark machine
            if prefetch:
                sums_4rows(dy, src, shift, part_b, part_g, i, d // lanes, min(i + SUMS_AHEAD, n - 4))
                _sweep_sums(dy, src, shift, part_b, part_g, i, d // lanes * lanes, d)
            else:
                _sweep_sums(dy, src, shift, part_b, part_g, i, 0, d)
            i += 4
        for i in range(i, b1):
            for j in range(d):
                part_b[j] += dy[i, j]
                part_g[j] += dy[i, j] * (src[i, j] - shift[j])
        for j in range(d):
            dbeta[j] += part_b[j]
            dgamma[j] += part_g[j] * scale[j]
            part_b[j], part_g[j] = 0, 0


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _col_apply(dy, src, shift, a, b, c, out, i0, i1, stream):
    """(N, D) rows i0:i1: dx = a*dy + b*(src - shift) + c (b from `_coef` folds xhat's scale in); 0 unless inf/NaN."""
    if stream:  # row bounds as intp: the parallel kernel's are unsigned, and one type means one compile
        return _col_apply_streaming(dy, src, shift, a, b, c, out, np.intp(i0), np.intp(i1))
    return _col_apply_cols(dy, src, shift, a, b, c, out, i0, i1, 0, dy.shape[1])


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _col_apply_cols(dy, src, shift, a, b, c, out, i0, i1, j0, j1):
    """`_col_apply` on columns j0:j1 of rows i0:i1."""
    chk = dy[0, 0] * 0
    for i in range(i0, i1):
        for j in range(j0, j1):
            o = a[j] * dy[i, j] + b[j] * (src[i, j] - shift[j]) + c[j]  # x - mu first: exact when x is near mu
            out[i, j] = o
            chk += o * 0  # free beside the memory traffic
    return chk


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _head(out, row):
    """Columns of `row` before out's first cache-line boundary in it (all of them if elements straddle lines)."""
    width, size = out.shape[1], out.itemsize
    misaligned = (out.ctypes.data + row * width * size) % VECTOR_BYTES
    return min(width, (VECTOR_BYTES - misaligned) % VECTOR_BYTES // size) if misaligned % size == 0 else width


@njit(cache=True, fastmath=_FLAGS)
def _col_apply_streaming(dy, src, shift, a, b, c, out, i0, i1):
    """`_col_apply` with dx written by non-temporal vector stores, and by plain stores before the first cache-line
    boundary and after the last. Where rows are whole lines long, rows i0:i1 are streamed as one run of lines
    (`_stream_lines`), with plain stores only before row i0's first line boundary and after row i1-1's last;
    otherwise row by row, with plain stores before each row's first boundary and after its last."""
    d, size = dy.shape[1], dy.itemsize
    lanes = VECTOR_BYTES // size
    head = _head(out, i0)
    lines = d * size % VECTOR_BYTES == 0 and head < d
    chk = dy[0, 0] * 0
    for i in range(i0, i1):  # one loop for both ways: each inlined call site costs compile time
        if not lines:
            head = _head(out, i)
        nvec = (d - head) // lanes
        if i == i0 or not lines:
            chk += _col_apply_cols(dy, src, shift, a, b, c, out, i, i + 1, 0, head)
        if lines and i == i0:
            chk += _stream_lines(dy, src, shift, a, b, c, out, i0, i1 - i0 - (head > 0), head)
        elif not lines:
            ahead = min(i + APPLY_AHEAD, dy.shape[0] - 1)  # the row whose lines are prefetched meanwhile
            chk += stream_apply_1row(dy, src, shift, a, b, c, out, 0, i, head, nvec, ahead)
        if i == i1 - 1 or not lines:
            # plain stores resume after the row's last line: for the run of lines, `head` columns into row i1-1
            # (at its end if head is 0)
            end = (head or d) if lines else head + nvec * lanes
            chk += _col_apply_cols(dy, src, shift, a, b, c, out, i, i + 1, end, d)
    stream_fence()
    return chk


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _stream_lines(dy, src, shift, a, b, c, out, i0, m, head):
    """Non-temporal stores of m rows of d values that start `head` columns into row i0 (a "view" row holds the
    end of one row and the start of the next), where each row is a whole number of cache lines and row i0's
    column `head` starts one: every line, even one that straddles two rows of out, lies in one view row.
    The coefficients are rotated to the view's columns, and each load of them serves two view rows (one
    for the last of an odd m)."""
    d = dy.shape[1]
    lanes = VECTOR_BYTES // dy.itemsize
    rot = np.empty((4, d), dy.dtype)  # shift, a, b, c of column (head + j) % d, for view column j
    for j in range(d):
        k = (head + j) % d
        rot[0, j], rot[1, j], rot[2, j], rot[3, j] = shift[k], a[k], b[k], c[k]
    base = i0 * d + head  # the view's first element, as an index into the arrays' data
    chk = dy[0, 0] * 0
    for i in range(0, m - 1, 2):
        chk += stream_apply_2rows(dy, src, rot[0], rot[1], rot[2], rot[3], out, base, i, 0, d // lanes,
                                  min(i + APPLY_AHEAD, m - 2))
    if m % 2:
        chk += stream_apply_1row(dy, src, rot[0], rot[1], rot[2], rot[3], out, base, m - 1, 0, d // lanes, m - 1)
    return chk


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _row_sums(dy, src, h, sk, r):
    """sum(dy) and sum(dy*xhat), xhat = (src - h)*sk, of row r in the array's dtype (split over SIMD lanes), as float64."""
    s_dy, s_dyx = dy[r, 0] * 0, dy[r, 0] * 0  # zeros of dy's dtype; a NaN in dy still propagates
    for m in range(dy.shape[1]):
        s_dy += dy[r, m]
        s_dyx += dy[r, m] * (src[r, m] - h)
    return np.float64(s_dy), np.float64(s_dyx * sk)


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _row_apply(dy, src, h, ak, bk, ck, out, r, m0, m1):
    """dx = a*dy + b*(src - h) + c along columns m0:m1 of row r (b folds xhat's scale in); 0 unless some dx is inf or NaN."""
    chk = dy[r, 0] * 0
    for m in range(m0, m1):
        o = ak * dy[r, m] + bk * (src[r, m] - h) + ck
        out[r, m] = o
        chk += o * 0
    return chk


@njit(cache=True, fastmath=_FLAGS)
def _rows_apply_streaming(dy, src, shift, a, b, c, out, r0, r1):
    """`_rows_apply` with dx written by non-temporal vector stores: scalar stores up to the first
    cache line of each row's dx, vector stores on the whole lines, scalar stores after them."""
    ch, width, size = a.shape[0], dy.shape[1], dy.itemsize
    lanes = VECTOR_BYTES // size
    chk = dy[0, 0] * 0
    for r in range(r0, r1):
        k = r % ch
        head = _head(out, r)
        end = head + (width - head) // lanes * lanes
        chk += _row_apply(dy, src, shift[k], a[k], b[k], c[k], out, r, 0, head)
        chk += stream_apply_row(dy, src, shift[k], a[k], b[k], c[k], out, r, head, (end - head) // lanes)
        chk += _row_apply(dy, src, shift[k], a[k], b[k], c[k], out, r, end, width)
    stream_fence()
    return chk


@njit(cache=True, fastmath=False)
def _coef(gamma, inv_s, inv_bd, inv_b, dgamma, dbeta, scale):
    """dx = a*dy + b*(src - shift) + c with xhat = (src - shift)*scale: a = gamma*inv_s, b = -a*dgamma/(B-ddof)*scale,
    c = -a*dbeta/B, in the array's dtype, from the float64 sums (shift 0 and scale 1 where src is xhat)."""
    a = gamma * inv_s
    a64 = a.astype(np.float64)
    b = (-a64 * dgamma * inv_bd * scale).astype(gamma.dtype)
    c = (-a64 * dbeta * inv_b).astype(gamma.dtype)
    return a, b, c


@njit(cache=True, fastmath=False, inline="always")
def _normal_factors(gamma, inv_s) -> bool:
    """False if some gamma*inv_s (in their dtype), the factor dx or y is formed with, is subnormal or 0 though
    gamma is not 0: its product with a large dy or x - mu would have lost digits that the result still has.
    (in_range cannot rule this out: it reads min and max |gamma|, and a gamma of 0 stands for the minimum.)"""
    tiny = np.finfo(gamma.dtype).tiny
    ok = True
    for k in range(gamma.shape[0]):  # no branch in the loop: it runs on every call, and vectorizes so
        ok &= (gamma[k] == 0) | (abs(gamma[k] * inv_s[k]) >= tiny)
    return ok


@njit(cache=True, fastmath=False, inline="always")
def _coef_normal(gamma, inv_s, b, c, dgamma, dbeta, scale, rows) -> bool:
    """False if a factor of dx has lost digits to the subnormal range though the exact one is not 0: a (see
    `_normal_factors`); b or c rounded to the dtype (b carries 1/s where src is x, and x - mu carries s back);
    or the first pass's sum of dy*(src - shift) before `scale`, below `rows` smallest normal numbers, where
    its products underflowed. `backward` rescales dy and gamma instead."""
    tiny = np.finfo(b.dtype).tiny
    ok = _normal_factors(gamma, inv_s)
    per_lim = 1.0 / (rows * tiny)  # |dgamma/scale| >= rows*tiny, without a division or an underflow per channel
    for k in range(b.shape[0]):  # as there, no branch
        sums = (dgamma[k] == 0) | (abs(dgamma[k]) * per_lim >= scale[k])
        ok &= sums & ((gamma[k] == 0) | (((dgamma[k] == 0) | (abs(b[k]) >= tiny)) & ((dbeta[k] == 0) | (abs(c[k]) >= tiny))))
    return ok


@njit(cache=True, fastmath=False)
def _store_sums(dgamma, dbeta, dgamma_out, dbeta_out):
    """The float64 totals rounded to the array's dtype; returns 0 unless one is inf or NaN after rounding."""
    chk = 0.0
    for k in range(dgamma.shape[0]):
        dgamma_out[k], dbeta_out[k] = dgamma[k], dbeta[k]
        chk += dgamma_out[k] * 0.0 + dbeta_out[k] * 0.0
    return chk


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _rows_sums(dy, src, shift, scale, r0, r1, dgamma, dbeta):
    """Rows r0:r1 of (N*C, M), row r in channel r % C: dbeta[k] += sum(dy), dgamma[k] += sum(dy*xhat) over its rows."""
    ch = dgamma.shape[0]
    for r in range(r0, r1):
        k = r % ch
        s_dy, s_dyx = _row_sums(dy, src, shift[k], scale[k], r)
        dbeta[k] += s_dy
        dgamma[k] += s_dyx


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _rows_apply(dy, src, shift, a, b, c, out, r0, r1, stream):
    """Rows r0:r1 of (N*C, M): dx = a*dy + b*(src - shift) + c with channel r % C's coefficients (streamed to
    memory if `stream`); 0 unless inf/NaN."""
    if stream:  # row bounds as intp, as in _col_apply
        return _rows_apply_streaming(dy, src, shift, a, b, c, out, np.intp(r0), np.intp(r1))
    ch = a.shape[0]
    chk = dy[0, 0] * 0
    for r in range(r0, r1):
        k = r % ch
        chk += _row_apply(dy, src, shift[k], a[k], b[k], c[k], out, r, 0, dy.shape[1])
    return chk


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _block_sums(dy, src, shift, scale, r0, r1, dgamma, dbeta, nchw, prefetch):
    """Rows r0:r1 into the channel sums: per column of (N, D) (prefetching the rows ahead if `prefetch`), or
    per row's channel of (N*C, S)."""
    if nchw:
        _rows_sums(dy, src, shift, scale, r0, r1, dgamma, dbeta)
    else:
        _col_sums(dy, src, shift, scale, r0, r1, dgamma, dbeta, prefetch)


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _block_apply(dy, src, shift, a, b, c, out, r0, r1, nchw, stream):
    """dx on rows r0:r1 of either layout (streamed to memory if `stream`); 0 unless some dx is inf or NaN."""
    if nchw:
        return _rows_apply(dy, src, shift, a, b, c, out, r0, r1, stream)
    return _col_apply(dy, src, shift, a, b, c, out, r0, r1, stream)


@njit(cache=True, fastmath=_FLAGS)
def _backward_jit(dy, src, shift, scale, gamma, inv_s, inv_bd, inv_b, out, dgamma_out, dbeta_out, nchw, stream, prefetch):
    """On one thread: the channel sums in one pass over the rows, then dx in a second pass."""
    ch, rows = gamma.shape[0], dy.shape[0]
    dgamma, dbeta = np.zeros(ch), np.zeros(ch)
    _block_sums(dy, src, shift, scale, 0, rows, dgamma, dbeta, nchw, prefetch)
    if not np.isfinite(_store_sums(dgamma, dbeta, dgamma_out, dbeta_out)):
        return np.inf  # a sum is not finite: no dx written yet, so dy is intact even as out
    a, b, c = _coef(gamma, inv_s, inv_bd, inv_b, dgamma, dbeta, scale)
    if not _coef_normal(gamma, inv_s, b, c, dgamma, dbeta, scale, 1.0 / inv_b):
        return np.inf  # as above: `backward` rescales
    return _block_apply(dy, src, shift, a, b, c, out, 0, rows, nchw, stream)


# Only the two prange loops run in parallel. With parallel=True numba also turns each np.zeros into a
# parallel loop, each compiled as a threaded function of its own: 0.8 s more CPU per dtype to compile, for
# arrays of a few thousand values. An options object, not a dict: numba (0.68.1 here) pops the keys out of a
# dict of options when it compiles, so the second dtype's compile would have had every option on.
try:
    from numba.core.cpu_options import ParallelOptions  # numba's own class, not a documented name
except ImportError:  # a numba that moved it: every option on, as parallel=True
    _PRANGE_ONLY = True
else:
    _PRANGE_ONLY = ParallelOptions({"prange": True, "numpy": False, "comprehension": False, "reduction": False,
                                    "inplace_binop": False, "setitem": False, "stencil": False, "fusion": False})


@njit(cache=True, fastmath=_FLAGS, parallel=_PRANGE_ONLY)
def _backward_par(dy, src, shift, scale, gamma, inv_s, inv_bd, inv_b, out, dgamma_out, dbeta_out, nchw, stream, prefetch,
                  chunks):
    """The rows split into `chunks` contiguous blocks, one per thread (each reads memory in order);
    per-block sums join in float64 in a fixed order, so every run gives the same result."""
    ch, rows = gamma.shape[0], dy.shape[0]
    dgamma_t, dbeta_t = np.zeros((chunks, ch)), np.zeros((chunks, ch))
    for t in numba.prange(chunks):
        _block_sums(dy, src, shift, scale, t * rows // chunks, (t + 1) * rows // chunks, dgamma_t[t], dbeta_t[t], nchw,
                    prefetch)
    dgamma, dbeta = np.zeros(ch), np.zeros(ch)
    for t in range(chunks):  # a loop: sum(axis=0) took 2 s more to compile (its axis checks)
        for k in range(ch):
            dgamma[k] += dgamma_t[t, k]
            dbeta[k] += dbeta_t[t, k]
    if not np.isfinite(_store_sums(dgamma, dbeta, dgamma_out, dbeta_out)):
        return np.inf  # a sum is not finite: no dx written yet
    a, b, c = _coef(gamma, inv_s, inv_bd, inv_b, dgamma, dbeta, scale)
    if not _coef_normal(gamma, inv_s, b, c, dgamma, dbeta, scale, 1.0 / inv_b):
        return np.inf
    chk = np.zeros(chunks, dy.dtype)
    for t in numba.prange(chunks):
        chk[t] = _block_apply(dy, src, shift, a, b, c, out, t * rows // chunks, (t + 1) * rows // chunks, nchw, stream)
    total = chk[0]
    for t in range(1, chunks):
        total += chk[t]
    return total


def _check_threads(threads) -> int:
    """threads: an int from 1 to numba's thread count."""
    if type(threads) is int and 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        return threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int from 1 to {numba.config.NUMBA_NUM_THREADS}; got {threads!r}")
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be from 1 to {numba.config.NUMBA_NUM_THREADS} (numba's thread count "
                         f"on this machine); got {threads}")
    return int(threads)


def _run(serial, parallel, threads, nbytes, *args):
    """Call the serial kernel, or the parallel one on `threads` threads when the arrays are large enough."""
    if threads == 1 or nbytes < PARALLEL_MIN_BYTES:
        return serial(*args)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return parallel(*args, threads)
    finally:
        numba.set_num_threads(before)


def backward_fast(dy, cache: Cache, out=None, threads=1):
    """Same (dx, dgamma, dbeta) as `batchnorm.backward`: one fused pass for the sums, one for dx (numba).

    threads > 1 splits the rows (for NCHW, the (n, c) rows of H*W values) into that many contiguous
    blocks, one per thread (numba's parallel loops), when x has at least PARALLEL_MIN_BYTES bytes;
    sums are accumulated per block in the array's dtype and in float64 across blocks, so the result
    does not depend on the thread count beyond rounding. For arrays of at least
    STREAM_MIN_BYTES bytes, dx is written with non-temporal stores (it bypasses the cache; same values
    to a few ulps).
    """
    threads = _check_threads(threads)
    user_out = out
    dy, (src, shift, scale), out = _prepare(dy, cache, out)
    if src.dtype.type not in (np.float32, np.float64):
        return _finish(dy, cache, None, user_out)
    ch = src.shape[1]
    dgamma, dbeta = np.empty(ch, src.dtype), np.empty(ch, src.dtype)
    # numba's loops raise no floating-point warnings: an overflow shows up in chk instead
    dy_k, src_k, shift_k, scale_k, gamma_k, inv_s_k = _frozen(_rows(dy), _rows(src), shift, scale,
                                                             cache.gamma.reshape(ch), cache.inv_s.reshape(ch))
    chk = _run(_backward_jit, _backward_par, threads, src.nbytes, dy_k, src_k, shift_k, scale_k, gamma_k, inv_s_k,
               1.0 / (cache.B - cache.ddof), 1.0 / cache.B, _rows(out), dgamma, dbeta, src.ndim > 2,
               src.nbytes >= STREAM_MIN_BYTES, src.nbytes >= PREFETCH_MIN_BYTES)
    if not np.isfinite(chk):  # inf: a sum overflowed or lost digits before any dx was written (a factor too); NaN: some dx did
        return _finish(dy, cache, None, user_out, in_place=bool(np.isnan(chk)) and np.shares_memory(out, dy))
    if out.dtype == cache.x.dtype:  # float32, float64: already in x's dtype, and in out if given
        return out, dgamma, dbeta
    return _finish(dy, cache, (out, dgamma, dbeta), user_out)  # float16: cast back, refusing what does not fit


# The tuned forward. Pass 1 reads x once for sums shifted by a value near each channel's mean (so an
# offset does not cancel digits away); pass 2 reads x and writes y alone (xmu and xhat are left to
# LazyCache). For (N, D) the shift is the mean of the first SHIFT_ROWS rows and the partial sums run
# in x's dtype over ROWS_PER_BLOCK rows, on all SIMD lanes; for NCHW the shift is the channel's first
# value and each row's sums run in float64. The one-pass variance s2 - s1**2/B loses digits when the
# mean is far from the shift in units of the spread: where it would lose more than CANCEL_BITS of the
# partial sums' precision, `forward_fast` falls back to `forward`.
CANCEL_BITS = {np.float64: 20, np.float32: 4}  # float32 partial sums keep about 20 of 24 bits before this
CANCEL_BITS_FLOAT64 = CANCEL_BITS[np.float64]
# The (N, D) shift averages this many rows: (mean - shift)**2 is then about var/8, so s2 - s1**2/B keeps
# all but a fraction of a bit, and the extra read is an eighth of one 64-row block.
SHIFT_ROWS = 8
# With eps >= MIN_EPS, s >= 1e-15: squares that underflow in float64 (below 1e-308) cannot matter to s.
MIN_EPS = 1e-30


@njit(cache=True, fastmath=False)
def _col_shift(x):
    """Per column, the mean of the first SHIFT_ROWS rows in x's dtype: near the column's mean, so few digits cancel."""
    m = min(x.shape[0], SHIFT_ROWS)
    acc = np.zeros(x.shape[1])
    for i in range(m):
        for j in range(x.shape[1]):
            acc[j] += x[i, j]
    return (acc / m).astype(x.dtype)


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _moments_cols(x, h, s1, s2):
    """(N, D): s1 = sum(x - h), s2 = sum((x - h)**2) per column; partial sums in x's dtype over at most
    ROWS_PER_BLOCK rows (every SIMD lane of float32), then float64 totals, 4 rows per sweep."""
    n, d = x.shape
    p1, p2 = np.zeros(d, x.dtype), np.zeros(d, x.dtype)
    for b0 in range(0, n, ROWS_PER_BLOCK):
        b1 = min(b0 + ROWS_PER_BLOCK, n)
        i = b0
        while i + 4 <= b1:  # each partial sum is loaded and stored once per 4 rows
            for j in range(d):
                t0, t1, t2, t3 = x[i, j] - h[j], x[i + 1, j] - h[j], x[i + 2, j] - h[j], x[i + 3, j] - h[j]
                p1[j] += (t0 + t1) + (t2 + t3)
                p2[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
            i += 4
        for i in range(i, b1):
            for j in range(d):
                t = x[i, j] - h[j]
                p1[j] += t
                p2[j] += t * t
        for j in range(d):
            s1[j] += p1[j]
            s2[j] += p2[j]
            p1[j], p2[j] = 0, 0


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _moments_rows(x, shift, s1, s2):
    """(N*C, M) rows, row r in channel r % C: the same sums per channel, row by row."""
    ch = shift.shape[0]
    for r in range(x.shape[0]):
        k = r % ch
        t1, t2, sk = 0.0, 0.0, shift[k]
        for m in range(x.shape[1]):
            t = np.float64(x[r, m]) - sk
            t1 += t
            t2 += t * t
        s1[k] += t1
        s2[k] += t2


@njit(cache=True, fastmath=False)
def _statistics(s1, s2, shift, B, ddof, eps, cancel_bits, mu, var, s, inv_s):
    """mu, var, s = sqrt(var + eps), inv_s = 1/s in x's dtype (as `forward` rounds them); False if digits cancelled."""
    one = mu.dtype.type(1)
    for k in range(s1.shape[0]):
        m2 = s2[k] - s1[k] * s1[k] / B  # sum((x - mu)**2), shifted
        if not (np.isfinite(m2) and m2 >= s2[k] * 2.0**-cancel_bits):
            return False
        mu[k] = shift[k] + s1[k] / B
        var[k] = m2 / (B - ddof)
        s[k] = np.sqrt(var[k] + mu.dtype.type(eps))
        inv_s[k] = one / s[k]
        if not (np.isfinite(var[k]) and np.isfinite(s[k]) and inv_s[k] > 0):
            return False  # beyond the dtype: forward's rescaled statistics say what fits
    return True


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _normalize_rows(x, mu, inv_s, gamma, beta, y):
    """(rows, M), row r in channel r % C: y = gamma*xhat + beta with xhat = (x - mu)*inv_s, in one sweep."""
    ch = mu.shape[0]
    chk = x[0, 0] * 0
    for r in range(x.shape[0]):
        k = r % ch
        mk, ik, gk, bk = mu[k], inv_s[k], gamma[k], beta[k]
        for m in range(x.shape[1]):
            v = x[r, m] - mk
            h = v * ik
            o = gk * h + bk
            y[r, m] = o
            chk += o * 0  # 0 unless some y is inf or NaN
    return chk


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _normalize_cols(x, mu, inv_s, gamma, beta, y):
    """(N, D): the same sweep with per-column statistics."""
    chk = x[0, 0] * 0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j] - mu[j]
            h = v * inv_s[j]
            o = gamma[j] * h + beta[j]
            y[i, j] = o
            chk += o * 0
    return chk


@njit(cache=True, fastmath=False)
def _exponent_span(gamma, s):
    """The largest |k| among the powers of two 2**k of min and max |gamma| and s, as `forward`'s _in_window reads them."""
    lo_g, hi_g, lo_s, hi_s = np.inf, 0.0, np.inf, 0.0
    for k in range(gamma.shape[0]):
        g = abs(np.float64(gamma[k]))
        lo_g, hi_g = min(lo_g, g), max(hi_g, g)
        lo_s, hi_s = min(lo_s, np.float64(s[k])), max(hi_s, np.float64(s[k]))
    return max(abs(math.frexp(lo_g)[1]), abs(math.frexp(hi_g)[1]), abs(math.frexp(lo_s)[1]), abs(math.frexp(hi_s)[1]))


@njit(cache=True, fastmath=_FLAGS)
def _forward_jit(x, gamma, beta, eps, ddof, nchw, cancel_bits, y, stats, stream_span):
    """Both passes and the statistics (rows mu, var, s, inv_s of `stats`) between them; where the exponent span
    of gamma and s is at most `stream_span` (-1: never), the first pass and the statistics only (the caller
    streams y, `_normalize_streaming`).

    Returns -1 where `forward` must take over (non-finite, cancellation, a gamma*inv_s below the normal numbers),
    else the exponent span of gamma and s.
    """
    ch = gamma.shape[0]
    if not (np.isfinite(gamma).all() and np.isfinite(beta).all()):
        return -1  # forward names the parameter
    mu, var, s, inv_s = stats[0], stats[1], stats[2], stats[3]
    B = x.size // ch
    s1, s2 = np.zeros(ch), np.zeros(ch)
    if nchw:
        shift = x[:ch, 0].astype(np.float64)
        _moments_rows(x, shift, s1, s2)
        cancel_bits = CANCEL_BITS_FLOAT64  # float64 sums, whatever x's dtype
    else:
        h = _col_shift(x)
        _moments_cols(x, h, s1, s2)
        shift = h.astype(np.float64)
    if not (_statistics(s1, s2, shift, B, ddof, eps, cancel_bits, mu, var, s, inv_s)
            and _normal_factors(gamma, inv_s)):  # either pass 2 may form gamma*inv_s (LLVM hoists it)
        return -1
    span = _exponent_span(gamma, s)
    if span <= stream_span:
        return span
    chk = _normalize_rows(x, mu, inv_s, gamma, beta, y) if nchw else _normalize_cols(x, mu, inv_s, gamma, beta, y)
    return span if np.isfinite(chk) else -1


def _normalize_streaming(x, stats, gamma, beta, y) -> bool:
    """forward_fast's second pass by backward_fast's streamed one: y = b*(x - mu) + beta with b = gamma*inv_s
    (a = 0: the kernels' dy term is unused; _forward_jit checked that b is a normal number wherever gamma is
    not 0); False if some y is inf or NaN."""
    ch = gamma.shape[0]
    b = gamma * stats[3]  # the roundings of forward's gamma*(xmu*inv_s), associated differently
    mu, x_rows = stats[0], _rows(x)
    kernel = _rows_apply_streaming if x.ndim > 2 else _col_apply_streaming
    # the argument types of backward_fast's own call, so that both share one compiled kernel
    chk = kernel(*_frozen(x_rows, x_rows, mu), np.zeros(ch, x.dtype), b, beta.copy(), _rows(y), 0, x_rows.shape[0])
    return bool(np.isfinite(chk))


def _param(p, ch, dtype, copy):
    """gamma or beta as a contiguous (C,) array of x's dtype (a copy if asked), or None for `forward` to explain."""
    if type(p) is np.ndarray and p.shape == (ch,) and p.dtype == dtype and p.flags.c_contiguous:
        return p.copy() if copy else p
    try:
        arr = np.asarray(p)
    except (TypeError, ValueError):
        return None
    if arr.shape != (ch,) or arr.dtype.kind not in "fiu":
        return None
    return np.array(arr, dtype=dtype, order="C", copy=True) if copy else np.ascontiguousarray(arr, dtype=dtype)


def forward_fast(x, gamma, beta, eps=1e-5, ddof=0):
    """Same y as `batchnorm.forward` in two fused passes (numba), and a LazyCache that keeps x itself.

    Only y is written, as in PyTorch: the cache's xmu and xhat are computed when first read, and
    `backward_fast` recomputes xhat from x inside its passes, so x must not change before the backward.
    From FORWARD_STREAM_MIN_BYTES per array (and gamma, s in range), y is written by `backward_fast`'s
    streamed second pass as (gamma*inv_s)*(x - mu) + beta: non-temporal stores, the same roundings
    associated differently.

    float16 and longdouble x, eps below MIN_EPS (eps = 0 needs forward's zero-variance check),
    non-finite or refused input, statistics beyond the dtype, the rare channel whose shifted
    variance cancels CANCEL_BITS bits, and a gamma*inv_s that is subnormal though gamma is not 0 go
    to `forward`, which computes them or names what is wrong.
    """
    if (type(x) is not np.ndarray or x.dtype.type not in (np.float32, np.float64) or x.ndim < 2 or x.size == 0
            or type(ddof) is not int or ddof not in (0, 1) or not isinstance(eps, float) or not MIN_EPS <= eps < np.inf):
        return forward(x, gamma, beta, eps=eps, ddof=ddof)
    ch = x.shape[1]
    gamma_c = _param(gamma, ch, x.dtype, copy=True)  # the cache keeps gamma: a copy, as `forward` keeps it
    beta_c = _param(beta, ch, x.dtype, copy=False)  # read in this call only
    if gamma_c is None or beta_c is None or x.size // ch < 2:  # forward refuses a batch of one value per channel
        return forward(x, gamma, beta, eps=eps, ddof=ddof)
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    stats = np.empty((4, ch), x.dtype)  # mu, var, s, inv_s: one allocation, four views
    B = x.size // ch
    # y is streamed only where gamma and s are in range (as below): gamma*inv_s, which the streamed pass
    # multiplies by, cannot overflow then (_forward_jit rules out an underflow where gamma is not 0)
    stream_span = _window(x.dtype, B) if x.nbytes >= FORWARD_STREAM_MIN_BYTES else -1
    span = _forward_jit(*_frozen(_rows(x), gamma_c, beta_c), eps, ddof, x.ndim > 2, CANCEL_BITS[x.dtype.type], _rows(y),
                        stats, stream_span)
    if 0 <= span <= stream_span and not _normalize_streaming(x, stats, gamma_c, beta_c, y):
        span = -1  # some y is inf or NaN
    if span < 0:
        return forward(x, gamma, beta, eps=eps, ddof=ddof)  # refuses a NaN with its name, or computes exactly
    # as `forward` decides it: are gamma and s near enough to 1 that a backward needs no rescaling?
    in_range = _in_window([span], x.dtype, B)
    shape = (1, ch) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    mu, var, s, inv_s = stats.reshape((4,) + shape)
    return y, LazyCache._from_fields(x, mu, None, var, s, inv_s, None, gamma_c.reshape(shape), eps, ddof, axes, axes, B,
                                     in_range)


__all__ = ["FORWARD_STREAM_MIN_BYTES", "PARALLEL_MIN_BYTES", "PREFETCH_MIN_BYTES", "STREAM_MIN_BYTES", "LazyCache", "backward_blocked", "backward_fast",
           "forward_fast"]
