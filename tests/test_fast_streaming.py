"""The (N, D) second pass with non-temporal stores (bnbackprop._nontemporal) gives what the cached one gives.

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


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 40), d=st.integers(1, 70), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       lazy=st.booleans(), threads=st.sampled_from([1, 2]), offset=st.integers(0, 15), ddof=st.sampled_from([0, 1]))
def test_streamed_dx_is_the_cached_one_to_a_few_ulps_and_the_sums_are_the_same(n, d, seed, dtype, lazy, threads, offset, ddof):
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-50, 50) + rng.uniform(0.1, 5) * rng.standard_normal((n, d))).astype(dtype)
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    dy = (rng.standard_normal((n, d)) + rng.standard_normal()).astype(dtype)
    _, cache = (forward_fast if lazy else forward)(x, gamma, beta, ddof=ddof)
    want = [v.copy() for v in run(dy, cache, threads=threads, stream=False)]
    out = misaligned_like((n, d), dtype, offset)
    got = run(dy, cache, out=out, threads=threads)
    assert got[0] is out
    # the same formula per element; only whether a multiply-add is fused may differ
    size = np.max(np.abs(want[0])) + np.max(np.abs(dy)) * np.max(np.abs(cache.gamma * cache.inv_s))
    assert np.max(np.abs(got[0] - want[0])) <= 8 * np.finfo(dtype).eps * size
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])  # pass 1 is not streamed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 64), (6, 33), (5, 3), (9, 1)])  # aligned rows, unaligned, fewer columns than lanes
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


@pytest.mark.parametrize("seed", range(3))
def test_a_dx_that_overflows_in_the_streamed_pass_is_recomputed(seed):
    """gamma * dy overflows on the way, though dx fits: pass 2 reports it and the scale-safe backward answers."""
    rng = np.random.default_rng(seed)
    x = 100 * rng.standard_normal((6, 40)) + 300
    gamma, beta = rng.uniform(50, 100, 40) * rng.choice([-1, 1], 40), rng.normal(size=40)
    dy = rng.uniform(-1.0, 1.0, (6, 40))
    dy /= np.abs(dy).max()
    _, cache = forward(x, gamma, beta)
    want = backward(dy, cache)
    got = run(np.ldexp(dy, 1021), cache)
    for g, w in zip(got, want):
        assert np.isfinite(g).all()
        assert np.max(np.abs(np.ldexp(g, -1021) - w)) <= 1e-13 * np.max(np.abs(w))


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
    assert "movnt" in fresh_asm(fast._col_apply_streaming.py_func, *args)
    assert "movnt" not in fresh_asm(fast._col_apply_cols.py_func, *args, 0, 64)  # the cached path: ordinary stores
