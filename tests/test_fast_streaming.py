"""The second pass with non-temporal stores (bnbackprop._nontemporal) gives what the cached one gives, in
both layouts: (N, D), and NCHW with its (n, c) rows of H*W values.

backward_fast streams dx from STREAM_MIN_BYTES per array; here the threshold is set to 0, so that small
arrays of every width, alignment and thread count take the streamed path.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbackprop import fast
from bnbackprop.batchnorm import backward, forward
from bnbackprop.fast import backward_fast, forward_fast


def run(dy, cache, out=None, threads=1, stream=True):
    """backward_fast with the streamed second pass on or off, and two threads on any size."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "STREAM_MIN_BYTES", 0 if stream else 1 << 62)
        mp.setattr(fast, "PARALLEL_MIN_BYTES", 0)
        return backward_fast(dy, cache, out=out, threads=threads)


def misaligned_like(shape, dtype, offset):
    """An empty C-contiguous array that starts `offset` elements into a buffer: any alignment to a cache line."""
    size = int(np.prod(shape))
    return np.empty(size + 16, dtype)[offset:offset + size].reshape(shape)


def off_a_line(shape, dtype, offset):
    """An empty C-contiguous array that starts `offset` elements after a cache-line boundary."""
    size = int(np.prod(shape))
    buf = np.empty(size + 2 * 64 // np.dtype(dtype).itemsize, dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + offset
    return buf[start:start + size].reshape(shape)


# (N, D), then NCHW rows of H*W values: shorter than one vector, whole vectors (float32, float64), neither
SPATIAL = [(), (1, 1), (2, 3), (4, 4), (2, 8), (4, 16), (3, 7)]


@settings(max_examples=120, deadline=None)
@given(n=st.integers(2, 40), d=st.integers(1, 70), spatial=st.sampled_from(SPATIAL), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), lazy=st.booleans(), threads=st.sampled_from([1, 2]),
       offset=st.integers(0, 15), ddof=st.sampled_from([0, 1]))
def test_streamed_dx_is_the_cached_one_to_a_few_ulps_and_the_sums_are_the_same(n, d, spatial, seed, dtype, lazy, threads,
                                                                              offset, ddof):
    rng = np.random.default_rng(seed)
    shape = (n, d) + spatial
    x = (rng.uniform(-50, 50) + rng.uniform(0.1, 5) * rng.standard_normal(shape)).astype(dtype)
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    dy = (rng.standard_normal(shape) + rng.standard_normal()).astype(dtype)
    _, cache = (forward_fast if lazy else forward)(x, gamma, beta, ddof=ddof)
    want = [v.copy() for v in run(dy, cache, threads=threads, stream=False)]
    out = misaligned_like(shape, dtype, offset)
    got = run(dy, cache, out=out, threads=threads)
    assert got[0] is out
    # the same formula per element; only whether a multiply-add is fused may differ
    size = np.max(np.abs(want[0])) + np.max(np.abs(dy)) * np.max(np.abs(cache.gamma * cache.inv_s))
    assert np.max(np.abs(got[0] - want[0])) <= 8 * np.finfo(dtype).eps * size
    # pass 1 does not stream, and these arrays are below PREFETCH_MIN_BYTES: both runs sum with the same loop
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])  # blocks of one row (two threads, n=2) to eight: odd and even runs
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_of_whole_lines_stream_as_one_run_at_every_alignment_and_write_nothing_outside_out(dtype, n, threads):
    # (N, D) rows a whole number of cache lines long stream as one run of lines that starts `head` columns
    # into the first row (fast._stream_lines): every alignment of out, every element written, none beside it
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(n * threads)
    for d in (lanes, 3 * lanes):
        x = (rng.uniform(-50, 50) + rng.uniform(0.1, 5) * rng.standard_normal((n, d))).astype(dtype)
        _, cache = forward(x, rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype))
        dy = (rng.standard_normal((n, d)) + rng.standard_normal()).astype(dtype)
        want = run(dy, cache, threads=threads, stream=False)[0].copy()
        size = np.max(np.abs(want)) + np.max(np.abs(dy)) * np.max(np.abs(cache.gamma * cache.inv_s))
        for offset in range(lanes):
            buf = np.full(n * d + 2 * lanes, 7.0, dtype)
            base = (-buf.ctypes.data % 64) // buf.itemsize  # buf[base] starts a cache line
            out = buf[base + offset:base + offset + n * d].reshape(n, d)
            got = run(dy, cache, out=out, threads=threads)[0]
            assert got is out and np.max(np.abs(got - want)) <= 8 * np.finfo(dtype).eps * size, (d, offset)
            outside = np.concatenate([buf[:base + offset], buf[base + offset + n * d:]])
            assert (outside == 7.0).all(), (d, offset)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_dx_that_overflows_anywhere_in_a_run_of_lines_is_refused_as_backward_refuses_it(dtype, monkeypatch):
    """out starts off a cache line, 4 rows: a run of three view rows, the last one streamed on its own. One dx
    overflows (and no coefficient does) in the first row's plain head, inside the run, in the run's last
    view row (at both ends), or in the last row's plain tail: each must be reported, not returned as inf."""
    lanes = 64 // np.dtype(dtype).itemsize
    n, d, big = 4, 2 * lanes, np.finfo(dtype).max
    rng = np.random.default_rng(lanes)
    x = (1e-3 * rng.standard_normal((n, d))).astype(dtype)
    _, cache = forward(x, np.full(d, 1e10, dtype), np.zeros(d, dtype))
    a = (cache.gamma * cache.inv_s).ravel()
    finish = fast._finish
    for offset in (1, lanes - 1):  # head = lanes - offset columns of plain stores before the run
        head = lanes - offset
        for row, col in ((0, 0), (0, head), (2, head), (3, head - 1), (3, head)):
            dy = rng.standard_normal((n, d)).astype(dtype)
            # a*dy = 2x the largest value: that dx (about 1.35x) overflows; c = -a*mean(dy) (0.5x) does not
            dy[row, col] = big / a[col] * 2
            with pytest.raises(ValueError, match=f"dx overflows {np.dtype(dtype).name}") as want:
                backward(dy, cache)
            fallbacks = []
            monkeypatch.setattr(fast, "_finish", lambda *a, **k: fallbacks.append(a[2]) or finish(*a, **k))
            with pytest.raises(ValueError, match=f"dx overflows {np.dtype(dtype).name}") as got:
                run(dy, cache, out=off_a_line((n, d), dtype, offset))
            assert str(got.value) == str(want.value) and fallbacks == [None], (offset, row, col)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# aligned rows, unaligned, fewer columns than lanes; NCHW with rows of 64 and of 35 values
@pytest.mark.parametrize("shape", [(7, 64), (6, 33), (5, 3), (9, 1), (3, 4, 4, 16), (2, 3, 5, 7)])
def test_out_may_be_dy_on_the_streamed_path(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = (3 + rng.standard_normal(shape)).astype(dtype)
    _, cache = forward(x, rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype))
    dy = rng.standard_normal(shape).astype(dtype)
    want = run(dy, cache, stream=False)[0]
    inplace = dy.copy()
    got = run(inplace, cache, out=inplace)[0]
    assert got is inplace
    assert np.max(np.abs(got - want)) <= 8 * np.finfo(dtype).eps * (np.max(np.abs(want)) + np.max(np.abs(dy) * np.abs(cache.gamma * cache.inv_s)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 64), (3, 2, 8, 8)])  # (N, D), and NCHW with rows of 64 values
@pytest.mark.parametrize("column", [0, 20, 63])  # first, middle and last lane group of a 64-wide row
def test_a_dx_that_overflows_inside_the_vector_loop_is_refused_as_backward_refuses_it(shape, column, dtype, monkeypatch):
    """a*dy overflows in one element of the vector body: the pass must report it, not return inf."""
    rng = np.random.default_rng(column)
    x = (1e-3 * rng.standard_normal(shape)).astype(dtype)
    ch = shape[1]
    _, cache = forward(x, np.full(ch, 1e10, dtype), np.zeros(ch, dtype))
    dy = rng.standard_normal(shape).astype(dtype)
    flat = dy.reshape(-1, 64)  # a view: (N, D) rows, or NCHW's (n, c) rows of H*W values
    k = column if len(shape) == 2 else 2 % ch  # the channel of the element
    big = np.finfo(dtype).max
    flat[2, column] = big / (cache.gamma * cache.inv_s).ravel()[k] * 1.5  # a*dy = 1.5 x the largest finite value
    with pytest.raises(ValueError, match=f"dx overflows {np.dtype(dtype).name}") as want:
        backward(dy, cache)
    fallbacks = []
    finish = fast._finish
    monkeypatch.setattr(fast, "_finish", lambda *a, **k: fallbacks.append(a[2]) or finish(*a, **k))
    with pytest.raises(ValueError, match=f"dx overflows {np.dtype(dtype).name}") as got:
        run(dy, cache, out=off_a_line(shape, dtype, 0))  # on a line: every row a vector body
    assert str(got.value) == str(want.value) and fallbacks == [None]  # the fast pass gave up; backward answered


@pytest.mark.parametrize("setting, index", [("STREAM_MIN_BYTES", 12), ("PREFETCH_MIN_BYTES", 13)],
                         ids=["stream", "prefetch"])  # index: the flag's place among the kernels' arguments
@pytest.mark.parametrize("shape", [(64, 48), (8, 6, 4, 16)])
@pytest.mark.parametrize("threads", [1, 2])
def test_backward_fast_sets_each_flag_from_its_threshold_and_not_below(threads, shape, setting, index, monkeypatch):
    rng = np.random.default_rng(threads)
    x = 3 + rng.standard_normal(shape)
    _, cache = forward(x, rng.standard_normal(shape[1]), rng.standard_normal(shape[1]))
    seen = []
    for name in ("_backward_jit", "_backward_par"):
        kernel = getattr(fast, name)
        monkeypatch.setattr(fast, name, lambda *a, k=kernel: seen.append(a[index]) or k(*a))
    monkeypatch.setattr(fast, "PARALLEL_MIN_BYTES", 0)
    for threshold, on in ((x.nbytes, True), (x.nbytes + 1, False)):
        monkeypatch.setattr(fast, setting, threshold)
        backward_fast(x, cache, threads=threads)
        assert seen.pop() is on


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="checks x86 instructions")
def test_the_streamed_pass_really_uses_non_temporal_stores():
    # LLVM drops a non-temporal hint it cannot honour without a word: read the machine code, of a fresh
    # compile (numba does not keep the assembly of a kernel it loaded from its cache).
    def fresh_asm(py_func, *args):
        kernel = fast.numba.njit(fastmath=fast._FLAGS)(py_func)
        kernel(*args)
        return "\n".join(kernel.inspect_asm().values())

    x, ones = np.random.default_rng(0).standard_normal((8, 64)), np.ones(64)
    args = (x, x, ones, ones, ones, ones, np.empty_like(x), 0, 8)
    nd, nchw = fresh_asm(fast._col_apply_streaming.py_func, *args), fresh_asm(fast._rows_apply_streaming.py_func, *args)
    for streamed in (nd, nchw):
        assert "movnt" in streamed and "sfence" in streamed  # the stores, and the fence that orders them
    assert nd.count("prefetcht1") >= 6  # (N, D) also asks for the rows ahead: 2 arrays x (2 rows, 1 row, ...)
    # the cached paths of both layouts: ordinary stores
    assert "movnt" not in fresh_asm(fast._col_apply_cols.py_func, *args, 0, 64)
    assert "movnt" not in fresh_asm(fast._row_apply.py_func, x, x, 1.0, 1.0, 1.0, 1.0, np.empty_like(x), 0, 0, 64)
