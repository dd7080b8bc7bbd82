"""forward_fast agrees with forward, and backward_fast on two threads with one thread; bad arguments are named.

The tests that check y run twice (parameter `stream`): with y written by forward_fast's own second pass,
and by the streamed one (non-temporal stores, used from FORWARD_STREAM_MIN_BYTES per array; the
threshold is set to 0 there, within the call).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbackprop import fast
from bnbackprop.batchnorm import Cache, backward, forward
from bnbackprop.fast import backward_fast, forward_fast

FIELDS = ("mu", "xmu", "var", "s", "inv_s", "xhat")

shapes = st.one_of(
    st.tuples(st.integers(2, 70), st.integers(1, 9)),  # (N, D), more than one block of 64 rows
    st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),  # NCHW
).filter(lambda s: int(np.prod(s)) // s[1] >= 2)


def fast_forward(*args, stream, **kwargs):
    """forward_fast with y written by the streamed second pass at any size (stream=True), or never."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "FORWARD_STREAM_MIN_BYTES", 0 if stream else 1 << 62)
        return forward_fast(*args, **kwargs)


both_passes = pytest.mark.parametrize("stream", [False, True], ids=["plain y", "streamed y"])


def streamed_calls(monkeypatch) -> list[str]:
    """Record each call of the streamed second passes (by name) that forward_fast makes from now on."""
    calls = []
    for name in ("_col_apply_streaming", "_rows_apply_streaming"):
        kernel = getattr(fast, name)
        monkeypatch.setattr(fast, name, lambda *args, k=kernel, n=name: calls.append(n) or k(*args))
    return calls


def batch(shape, seed, offset, dtype=np.float64):
    """x with an offset and a random spread per channel, random gamma and beta."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    spread = rng.uniform(0.1, 10, C).reshape((1, C) + (1,) * (len(shape) - 2))
    x = (offset + spread * rng.standard_normal(shape)).astype(dtype)
    return x, rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)


def scale(x, cache):
    """cond = 1 + max|x|/s per run: rounding x - mu costs this factor in any algorithm (see batchnorm's docstring)."""
    return 1 + float(np.max(np.abs(x.astype(np.float64)))) / float(np.min(cache.s))


@both_passes
@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 3.0, -1e2, 1e4]),
       ddof=st.sampled_from([0, 1]), eps=st.sampled_from([1e-5, 1e-3, 0.5]))
def test_float64_forward_fast_agrees_with_forward(stream, shape, seed, offset, ddof, eps):
    x, gamma, beta = batch(shape, seed, offset)
    y, cache = forward(x, gamma, beta, eps=eps, ddof=ddof)
    y_f, cache_f = fast_forward(x, gamma, beta, eps=eps, ddof=ddof, stream=stream)
    cond = scale(x, cache)
    # y and xhat: 1e-13 of cond (a few units of 2**-53 times B-independent rounding of mu)
    assert np.max(np.abs(y_f - y)) <= 1e-13 * cond * (np.max(np.abs(gamma)) + np.max(np.abs(beta)))
    assert np.max(np.abs(cache_f.xhat - cache.xhat)) <= 1e-13 * cond
    for name in FIELDS:
        got, want = getattr(cache_f, name), getattr(cache, name)
        assert got.shape == want.shape and got.dtype == np.float64
        assert np.max(np.abs(got - want)) <= 1e-13 * cond * np.max(np.abs(want)) + 1e-13 * np.max(np.abs(x))
    for field in ("eps", "ddof", "axes", "param_axes", "B", "in_range"):
        assert getattr(cache_f, field) == getattr(cache, field)
    np.testing.assert_array_equal(cache_f.gamma, cache.gamma)


@both_passes
@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 3.0, 1e2]), ddof=st.sampled_from([0, 1]))
def test_float32_forward_fast_is_no_further_from_float64_than_forward(stream, shape, seed, offset, ddof):
    x, gamma, beta = batch(shape, seed, offset, np.float32)
    y64, c64 = forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64), ddof=ddof)
    y32, c32 = forward(x, gamma, beta, ddof=ddof)
    y_f, c_f = fast_forward(x, gamma, beta, ddof=ddof, stream=stream)
    assert y_f.dtype == np.float32 and all(getattr(c_f, f).dtype == np.float32 for f in FIELDS)
    unit = 2.0**-24 * 8 * scale(x, c64) * (np.max(np.abs(gamma)) + np.max(np.abs(beta)))
    assert np.max(np.abs(y_f - y64)) <= np.max(np.abs(y32 - y64)) + unit
    assert np.max(np.abs(c_f.xhat - c64.xhat)) <= np.max(np.abs(c32.xhat - c64.xhat)) + 2.0**-24 * 8 * scale(x, c64)


def test_the_fast_pair_is_a_training_step():
    x, gamma, beta = batch((6, 4, 5, 7), 3, 2.0)
    dy = np.random.default_rng(4).standard_normal(x.shape)
    got = backward_fast(dy, forward_fast(x, gamma, beta, ddof=1)[1])
    want = backward(dy, forward(x, gamma, beta, ddof=1)[1])
    for g, w in zip(got, want):
        assert np.max(np.abs(g - w)) <= 1e-12 * np.max(np.abs(w))


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_other_dtypes_are_computed_by_forward(dtype):
    x, gamma, beta = batch((9, 3), 5, 1.0, dtype)
    y, cache = forward(x, gamma, beta)
    y_f, cache_f = forward_fast(x, gamma, beta)
    np.testing.assert_array_equal(y_f, y)  # the same function on the same input: identical, not just close
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(cache_f, name), getattr(cache, name))


def test_eps_zero_and_cancellation_are_computed_by_forward():
    # NCHW: the shift is each channel's first value, here sqrt(B) spreads from the mean: s2 - s1**2/B cancels 21 bits
    x = np.zeros((2**21, 1, 1))
    x[0] = 1.0
    y_f, cache_f = forward_fast(x, np.ones(1), np.zeros(1))
    assert not isinstance(cache_f, fast.LazyCache)  # forward computed it
    np.testing.assert_array_equal(cache_f.var, forward(x, np.ones(1), np.zeros(1))[1].var)
    # (N, D) float32: the shift is the mean of the first 8 rows, far from the mean when those rows are unrepresentative
    x32 = np.zeros((4096, 3), np.float32)
    x32[:64] = 1.0
    y_f, cache_f = forward_fast(x32, np.ones(3, np.float32), np.zeros(3, np.float32))
    assert not isinstance(cache_f, fast.LazyCache)
    np.testing.assert_array_equal(y_f, forward(x32, np.ones(3, np.float32), np.zeros(3, np.float32))[0])
    with pytest.raises(ValueError, match="eps = 0 with a channel of zero variance"):
        forward_fast(np.ones((4, 2)), np.ones(2), np.zeros(2), eps=0.0)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([[np.nan, 1.0], [2.0, 3.0]], np.ones(2), np.zeros(2)), {}, ValueError, "x must be finite"),
        ((np.array([[1.0, 1.0], [2.0, np.inf]]), np.ones(2), np.zeros(2)), {}, ValueError, "x must be finite"),
        ((np.ones((4, 2)), np.ones(3), np.zeros(2)), {}, ValueError, "gamma has shape"),
        ((np.ones((4, 2)), np.ones(2), np.array([0.0, np.nan])), {}, ValueError, "beta must be finite"),
        ((np.ones((4, 2)), np.ones(2), np.zeros(2)), {"eps": -1.0}, ValueError, "eps must be"),
        ((np.ones((4, 2)), np.ones(2), np.zeros(2)), {"ddof": 2}, ValueError, "ddof must be"),
        ((np.ones((1, 2)), np.ones(2), np.zeros(2)), {}, ValueError, "more than 1 value per channel"),
        ((np.ones(4), np.ones(2), np.zeros(2)), {}, ValueError, "x has shape"),
        ((np.array([["a", "b"], ["c", "d"]]), np.ones(2), np.zeros(2)), {}, ValueError, "x must hold"),
    ],
)
def test_forward_fast_refuses_what_forward_refuses(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        forward(*args, **kwargs)
    with pytest.raises(error, match=match):
        forward_fast(*args, **kwargs)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), ddof=st.sampled_from([0, 1]), dtype=st.sampled_from([np.float32, np.float64]))
def test_two_threads_agree_with_one(shape, seed, ddof, dtype):
    x, gamma, beta = batch(shape, seed, 3.0, dtype)
    dy = (np.random.default_rng(seed).standard_normal(shape) + 0.5).astype(dtype)
    _, cache = forward(x, gamma, beta, ddof=ddof)
    one = backward_fast(dy, cache)
    before = fast.PARALLEL_MIN_BYTES
    fast.PARALLEL_MIN_BYTES = 0  # run the parallel kernels on these small arrays too
    try:
        two = backward_fast(dy, cache, threads=2)
    finally:
        fast.PARALLEL_MIN_BYTES = before
    want = backward(dy.astype(np.float64), forward(x.astype(np.float64), gamma.astype(np.float64),
                                                   beta.astype(np.float64), ddof=ddof)[1])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for o, t, w in zip(one, two, want):
        assert t.dtype == dtype
        size = np.max(np.abs(w)) + np.max(np.abs(dy)) * np.max(np.abs(cache.gamma * cache.inv_s))
        assert np.max(np.abs(t - o)) <= tol * size  # partial sums over other chunks: rounding only


@pytest.mark.parametrize(("threads", "error"), [(0, ValueError), (10**6, ValueError), (1.5, TypeError),
                                                 (True, TypeError), ("2", TypeError)])
def test_bad_threads_are_refused(threads, error):
    x, gamma, beta = batch((8, 3), 1, 0.0)
    _, cache = forward(x, gamma, beta)
    with pytest.raises(error, match="threads must be"):
        backward_fast(x, cache, threads=threads)


@both_passes
@pytest.mark.parametrize(("dtype", "magnitude"), [(np.float64, 1e-200), (np.float64, 1e200), (np.float64, 1e-310),
                                                  (np.float32, 1e-40), (np.float32, 1e30)])
def test_extreme_magnitudes_match_forward(stream, dtype, magnitude):
    x, gamma, beta = batch((40, 3, 2), 8, 1.0, np.float64)
    x = (x * magnitude).astype(dtype)
    gamma, beta = gamma.astype(dtype), beta.astype(dtype)
    y, cache = forward(x, gamma, beta)
    y_f, cache_f = fast_forward(x, gamma, beta, stream=stream)
    assert cache_f.in_range == cache.in_range
    # xhat is scale-free: rounding-sized differences, relative to cond, whichever path computed it
    assert np.max(np.abs(cache_f.xhat - cache.xhat)) <= 64 * np.finfo(dtype).eps * scale(x, cache)
    assert np.max(np.abs(y_f - y)) <= 64 * np.finfo(dtype).eps * scale(x, cache) * (np.max(np.abs(gamma)) + np.max(np.abs(beta)))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 3.0, -1e2]), ddof=st.sampled_from([0, 1]),
       dtype=st.sampled_from([np.float32, np.float64]), threads=st.sampled_from([1, 2]))
def test_backward_fast_on_a_lazy_cache_reads_x_and_agrees(shape, seed, offset, ddof, dtype, threads):
    x, gamma, beta = batch(shape, seed, offset, dtype)
    dy = (np.random.default_rng(seed + 1).standard_normal(shape) + 0.5).astype(dtype)
    _, lazy = forward_fast(x, gamma, beta, ddof=ddof)
    assert isinstance(lazy, fast.LazyCache) and not lazy.computed()
    before = fast.PARALLEL_MIN_BYTES
    fast.PARALLEL_MIN_BYTES = 0  # the parallel kernels too, on these small arrays
    try:
        from_x = backward_fast(dy, lazy, threads=threads)
        assert not lazy.computed()  # xhat was recomputed inside the passes, never stored
        from_xhat = backward_fast(dy, _eager(lazy), threads=threads)
    finally:
        fast.PARALLEL_MIN_BYTES = before
    want = backward(dy.astype(np.float64), forward(x.astype(np.float64), gamma.astype(np.float64),
                                                   beta.astype(np.float64), ddof=ddof)[1])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    size_dx = np.max(np.abs(want[0])) + np.max(np.abs(dy)) * np.max(np.abs(lazy.gamma * lazy.inv_s))
    cond = scale(x, lazy)
    for got, same, w, size in zip(from_x, from_xhat, want, (size_dx, None, None)):
        size = size if size is not None else np.max(np.abs(w)) + np.sum(np.abs(dy), axis=0).max()
        assert got.dtype == dtype
        assert np.max(np.abs(got - same)) <= tol * cond * size  # x - mu inside the pass, or stored: rounding only
        assert np.max(np.abs(got - w)) <= tol * cond * size


def _eager(cache):
    """The same statistics with xmu and xhat stored, as `forward` keeps them."""
    return Cache(*(getattr(cache, f.name) for f in dataclasses.fields(cache)))


@pytest.mark.parametrize("shape", [(33, 5), (3, 4, 5, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lazy_fields_are_forwards_arithmetic(shape, dtype):
    x, gamma, beta = batch(shape, 11, 7.0, dtype)
    _, lazy = forward_fast(x, gamma, beta)
    xmu = x - lazy.mu
    # the same two correctly rounded operations as `forward` on the same mu and inv_s: equal, not just close
    np.testing.assert_array_equal(lazy.xmu, xmu)
    np.testing.assert_array_equal(lazy.xhat, xmu * lazy.inv_s)
    assert lazy.computed() and lazy.xhat.dtype == dtype


def test_out_must_not_overlap_the_x_a_lazy_cache_reads():
    x, gamma, beta = batch((16, 3), 2, 1.0)
    dy = np.random.default_rng(2).standard_normal(x.shape)
    _, lazy = forward_fast(x, gamma, beta)
    with pytest.raises(ValueError, match="out overlaps x"):
        backward_fast(dy, lazy, out=x)
    want = backward(dy, forward(x, gamma, beta)[1])
    buf = dy.copy()
    dx, _, _ = backward_fast(buf, lazy, out=buf)  # out=dy: each dy is read before its dx is written
    assert dx is buf and np.max(np.abs(dx - want[0])) <= 1e-12 * np.max(np.abs(want[0]))


@pytest.mark.parametrize("shape", [(5000, 7), (300, 33), (70, 5)])
@pytest.mark.parametrize("offset", [0.0, 3.0, 1e3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_variance_from_float32_partial_sums(shape, offset, seed):
    # (N, D) float32: partial sums of x - shift in float32 over 64 rows (16 sweeps of 4, 19 roundings at most),
    # then float64; with the shift near the mean, the variance keeps about 24 - log2(19) bits
    x, gamma, beta = batch(shape, seed, offset, np.float32)
    var64 = forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64))[1].var
    var32 = forward(x, gamma, beta)[1].var
    _, c_f = forward_fast(x, gamma, beta)
    assert isinstance(c_f, fast.LazyCache)  # the fast path ran
    err_fast, err_numpy = (np.abs(v.astype(np.float64) - var64) / var64 for v in (c_f.var, var32))
    assert np.all(err_fast <= err_numpy + 32 * 2.0**-24)


@pytest.mark.parametrize(("dtype", "x_scale", "g_scale", "dy_scale", "eps"), [
    (np.float32, 1e18, 1e-5, 1e-5, 1e-5), (np.float64, 1e150, 1e-12, 1e-12, 1e-5),
    (np.float32, 1e-15, 1.0, 1e-31, 1e-30), (np.float64, 1e-140, 1e3, 1e-150, 1e-30)])
def test_lazy_backward_at_extreme_scales_matches_backward(dtype, x_scale, g_scale, dy_scale, eps):
    # out of in_range, x - mu carries a factor s that xhat does not: backward_fast must not use it there
    rng = np.random.default_rng(3)
    x = (x_scale * rng.standard_normal((40, 3))).astype(dtype)
    gamma = (g_scale * rng.uniform(0.5, 2, 3)).astype(dtype)
    beta = np.zeros(3, dtype)
    dy = (dy_scale * rng.standard_normal(x.shape)).astype(dtype)
    _, lazy = forward_fast(x, gamma, beta, eps=eps)
    want = backward(dy, forward(x, gamma, beta, eps=eps)[1])
    got = backward_fast(dy, lazy)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert np.max(np.abs(g - w)) <= 1e-4 * np.max(np.abs(w))  # float32 rounding, not a lost term


def test_sums_that_overflow_leave_dy_intact_even_as_out():
    rng = np.random.default_rng(4)
    x, gamma, beta = batch((64, 2), 4, 0.0, np.float32)
    _, cache = forward(x, gamma, beta)
    dy = (3e37 * np.abs(rng.standard_normal(x.shape))).astype(np.float32)  # sum(dy) exceeds float32
    before = dy.copy()
    with pytest.raises(ValueError, match="dbeta overflows float32"):
        backward(dy, cache)
    with pytest.raises(ValueError, match="dbeta overflows float32"):
        backward_fast(dy, cache, out=dy)  # refused before pass 2 wrote anything
    np.testing.assert_array_equal(dy, before)


@both_passes
@pytest.mark.parametrize(("shape", "dtype", "kernel"), [
    ((70, 9), np.float64, "_col_apply_streaming"), ((70, 9), np.float32, "_col_apply_streaming"),
    ((70, 16), np.float32, "_col_apply_streaming"),  # rows of whole cache lines: the streamed pass's run of lines
    ((3, 4, 5, 6), np.float64, "_rows_apply_streaming"), ((3, 4, 5, 6), np.float32, "_rows_apply_streaming")])
def test_y_is_streamed_where_the_setting_says_and_agrees(monkeypatch, stream, shape, dtype, kernel):
    x, gamma, beta = batch(shape, 6, 3.0, dtype)
    calls = streamed_calls(monkeypatch)
    y_f, cache_f = fast_forward(x, gamma, beta, stream=stream)
    assert calls == ([kernel] if stream else [])
    y, cache = forward(x, gamma, beta)
    assert np.max(np.abs(y_f - y)) <= 8 * np.finfo(dtype).eps * scale(x, cache) * (np.max(np.abs(gamma)) + np.max(np.abs(beta)))


def test_the_threshold_is_bytes_per_array(monkeypatch):
    # float32 (4096, 1024) is FORWARD_STREAM_MIN_BYTES exactly; a row fewer is below it
    calls = streamed_calls(monkeypatch)
    for rows in (4096, 4095):
        x, gamma, beta = batch((rows, 1024), 13, 1.0, np.float32)
        forward_fast(x, gamma, beta)
        assert (x.nbytes >= fast.FORWARD_STREAM_MIN_BYTES) == (rows == 4096)
    assert calls == ["_col_apply_streaming"]


@both_passes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 3), (4, 3, 4, 4)])
def test_a_gamma_of_zero_does_not_hide_a_tiny_one(monkeypatch, stream, shape, dtype):
    # in_range reads min and max |gamma|, and 0 stands for min: gamma*inv_s of the tiny channel would be
    # subnormal with s this large, though every gamma*xhat is a normal number. Both second passes may
    # multiply by gamma*inv_s (LLVM hoists it out of the NCHW loop), so forward computes y instead.
    rng = np.random.default_rng(14)
    big = {np.float64: 2.0**190, np.float32: 2.0**16}[dtype]  # s near it: inside in_range's window here
    x = (big * rng.standard_normal(shape)).astype(dtype)
    gamma = np.array([0.0, 2.0 ** (np.finfo(dtype).minexp + 4), 1.0], dtype)
    beta = np.zeros(3, dtype)
    y, cache = forward(x, gamma, beta)
    calls = streamed_calls(monkeypatch)
    y_f, cache_f = fast_forward(x, gamma, beta, stream=stream)
    assert cache.in_range and not isinstance(cache_f, fast.LazyCache) and calls == []
    axes = (0,) + tuple(range(2, len(shape)))
    size = np.max(np.abs(y[:, 1:]), axis=axes)  # per channel: the tiny one counts on its own
    assert np.all(np.max(np.abs(y_f[:, 1:] - y[:, 1:]), axis=axes) <= 8 * np.finfo(dtype).eps * scale(x, cache) * size)
    assert np.all(y_f[:, 0] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gamma_out_of_range_is_not_streamed_and_still_right(monkeypatch, dtype):
    # gamma far below in_range's window (gamma*inv_s still a normal number): y by forward_fast's plain pass
    x, gamma, beta = batch((40, 3), 9, 1.0, dtype)
    gamma = gamma * np.finfo(dtype).tiny ** 0.5
    monkeypatch.setattr(fast, "FORWARD_STREAM_MIN_BYTES", 0)
    calls = streamed_calls(monkeypatch)
    y_f, cache_f = forward_fast(x, gamma, beta)
    y, cache = forward(x, gamma, beta)
    assert not cache_f.in_range and isinstance(cache_f, fast.LazyCache) and calls == []
    assert np.max(np.abs(y_f - y)) <= 64 * np.finfo(dtype).eps * scale(x, cache) * (np.max(np.abs(gamma)) + np.max(np.abs(beta)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 3), (4, 3, 2, 5)])
def test_y_that_overflows_is_refused_as_forward_refuses_it(monkeypatch, shape, dtype):
    # y can overflow only where gamma is out of range (beta is below the largest number, and the in-range
    # gamma*xhat is far below half its ulp): forward's own second pass runs, and forward names the overflow
    x, gamma, beta = batch(shape, 10, 0.0, dtype)
    gamma = np.full_like(gamma, np.finfo(dtype).max / 2)  # y overflows where xhat > 2 (seed 10: in both shapes)
    monkeypatch.setattr(fast, "FORWARD_STREAM_MIN_BYTES", 0)
    calls = streamed_calls(monkeypatch)
    for bn in (forward, forward_fast):
        with pytest.raises(ValueError, match=f"y = gamma \\* xhat \\+ beta overflows {np.dtype(dtype).name}"):
            bn(x, gamma, beta)
    assert calls == []


@pytest.mark.parametrize("shape", [(70, 9), (3, 4, 5, 6)])
def test_a_streamed_pass_that_reports_inf_or_nan_hands_y_to_forward(monkeypatch, shape):
    x, gamma, beta = batch(shape, 12, 3.0)
    for name in ("_col_apply_streaming", "_rows_apply_streaming"):  # a planted check that says "not finite"
        monkeypatch.setattr(fast, name, lambda *args: np.nan)
    monkeypatch.setattr(fast, "FORWARD_STREAM_MIN_BYTES", 0)
    y_f, cache_f = forward_fast(x, gamma, beta)
    assert not isinstance(cache_f, fast.LazyCache)  # forward computed it (and would name an overflow)
    np.testing.assert_array_equal(y_f, forward(x, gamma, beta)[0])
