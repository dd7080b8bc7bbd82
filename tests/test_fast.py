"""The tuned backwards agree with the clear `backward`, and refuse bad `dy`, `out` and caches."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbackprop.batchnorm import backward, forward, normalize_forward
from bnbackprop import fast
from bnbackprop.fast import backward_blocked, backward_fast

TUNED = [backward_fast, backward_blocked]

shapes = st.one_of(
    st.tuples(st.integers(2, 40), st.integers(1, 9)),  # (N, D)
    st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),  # NCHW
).filter(lambda s: int(np.prod(s)) // s[1] >= 2)


def max_rel(a, b, scale=None) -> float:
    """Largest difference relative to `scale` (default: the largest entry of b)."""
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) if scale is None else scale))


def term_scales(dy, cache):
    """Size of the terms that cancel in dx, dgamma and dbeta: rounding is relative to these, not to the result.

    With B = 2, for example, dx is 1e-6 of gamma*dy/s, and any two summation orders differ by about
    1e-16 * gamma*dy/s, so a bound relative to dx itself would fail for every correct implementation.
    """
    axes = cache.axes
    return (
        float(np.max(np.abs(cache.gamma * cache.inv_s * dy))),
        float(np.max(np.abs(dy * cache.xhat).sum(axis=axes))),
        float(np.max(np.abs(dy).sum(axis=axes))),
    )


def case(shape, seed, offset, ddof, dtype=np.float64):
    """A batch with offset, random gamma and beta, and an upstream gradient with a nonzero mean."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (offset + rng.uniform(0.5, 3) * rng.standard_normal(shape)).astype(dtype)
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    dy = (rng.standard_normal(shape) + rng.standard_normal()).astype(dtype)
    _, cache = forward(x, gamma, beta, eps=1e-5, ddof=ddof)
    return dy, cache


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 3.0, 1e2, 1e4]), ddof=st.sampled_from([0, 1]))
@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_float64_agrees_with_backward_to_1e12(tuned, shape, seed, offset, ddof):
    dy, cache = case(shape, seed, offset, ddof)
    for got, want, scale in zip(tuned(dy, cache), backward(dy, cache), term_scales(dy, cache)):
        assert got.shape == want.shape and got.dtype == np.float64
        assert max_rel(got, want, scale) <= 1e-12


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), ddof=st.sampled_from([0, 1]))
@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_float32_stays_float32_and_near_float64(tuned, shape, seed, ddof):
    dy32, cache32 = case(shape, seed, 3.0, ddof, np.float32)
    _, cache64 = forward(cache32.x.astype(np.float64), cache32.gamma.ravel(), np.zeros(shape[1]), ddof=ddof)
    scales = term_scales(dy32.astype(np.float64), cache64)
    got, clear = tuned(dy32, cache32), backward(dy32, cache32)
    for g, c, w, scale in zip(got, clear, backward(dy32.astype(np.float64), cache64), scales):
        assert g.dtype == np.float32
        # Same float32 cache: only the backward's rounding differs (2**-24 per operation).
        assert max_rel(g, c, scale) <= 1e-5
        # No further from float64 than the clear float32 backward, forward rounding included.
        assert max_rel(g, w, scale) <= max_rel(c, w, scale) + 1e-5


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_out_is_filled_and_returned(tuned):
    dy, cache = case((6, 4, 3, 5), 7, 2.0, 0)
    out = np.full_like(dy, np.nan)
    dx, dgamma, dbeta = tuned(dy, cache, out=out)
    assert dx is out
    np.testing.assert_allclose(dx, backward(dy, cache)[0], rtol=0, atol=1e-12 * np.abs(dx).max())


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_out_may_be_dy(tuned):
    dy, cache = case((16, 5), 3, 1.0, 1)
    want = backward(dy, cache)[0]
    dx = tuned(dy, cache, out=dy)[0]
    assert dx is dy
    assert max_rel(dx, want) <= 1e-12


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_non_contiguous_dy_is_accepted(tuned):
    dy, cache = case((12, 6), 5, 0.0, 0)
    dy_f = np.asfortranarray(dy)
    assert max_rel(tuned(dy_f, cache)[0], backward(dy, cache)[0]) <= 1e-12


def test_the_warm_up_compiles_every_kernel_the_tests_call(fast_kernels_compiled):
    # conftest.compile_fast_kernels, run before the first of the NUMBA_FILES, compiled the forward, serial and
    # parallel kernels for both dtypes (the parallel one where numba has two threads); a backward on an eager
    # and on a lazy cache of either dtype adds no signature, so no test compiles them at its own depth.
    two = fast.numba.config.NUMBA_NUM_THREADS >= 2
    assert fast_kernels_compiled == {"_forward_jit": 2, "_backward_jit": 2, "_backward_par": 2 if two else 0}
    for dtype in (np.float64, np.float32):
        x, ones = (np.arange(24.0) ** 2).reshape(6, 4).astype(dtype), np.ones(4, dtype)
        for _, cache in (fast.forward_fast(x, ones, 0 * ones), forward(x, ones, 0 * ones)):
            backward_fast(np.ones((6, 4), dtype), cache)
    assert {name: len(getattr(fast, name).signatures) for name in fast_kernels_compiled} == fast_kernels_compiled
    # numba pops the keys of a dict of options when it compiles: an options object keeps prange only for both
    assert (fast._PRANGE_ONLY.prange, fast._PRANGE_ONLY.numpy) == (True, False)
    assert fast._backward_par.targetoptions["parallel"] is fast._PRANGE_ONLY


def read_only(a):
    """A read-only copy of a."""
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(12, 6), (3, 5, 2, 7)])
def test_read_only_arrays_give_the_same_result_without_a_second_compile(shape, dtype):
    rng = np.random.default_rng(7)
    x = (2.0 + rng.standard_normal(shape)).astype(dtype)
    gamma, beta, dy = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype), \
        rng.standard_normal(shape).astype(dtype)
    y, cache = fast.forward_fast(x, gamma, beta)
    grads = backward_fast(dy, cache)
    compiled = len(fast._forward_jit.signatures), len(fast._backward_jit.signatures)
    y_ro, cache_ro = fast.forward_fast(read_only(x), read_only(gamma), read_only(beta))
    grads_ro = backward_fast(read_only(dy), cache_ro)
    grads_eager = backward_fast(read_only(dy), forward(read_only(x), read_only(gamma), read_only(beta))[1])
    assert (len(fast._forward_jit.signatures), len(fast._backward_jit.signatures)) == compiled
    # the same compiled kernel on the same values, with no path that depends on an address at these sizes
    # (only the streamed pass, from STREAM_MIN_BYTES, looks at out's alignment): the same bits
    assert np.array_equal(y_ro, y) and all(np.array_equal(a, b) for a, b in zip(grads_ro, grads))
    want = backward(dy, forward(x, gamma, beta)[1])[0]
    assert max_rel(grads_eager[0], want) <= (1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("make_out", "match"),
    [
        (lambda dy, c: np.empty((3, 4)), "expected shape"),
        (lambda dy, c: np.empty(dy.shape, np.float32), "dtype"),
        (lambda dy, c: np.empty(dy.shape[::-1]).T, "C-contiguous"),
        (lambda dy, c: c.xhat, "overlaps cache.xhat"),
        (lambda dy, c: [[0.0]], "numpy array"),
    ],
)
def test_bad_out_is_refused(tuned, make_out, match):
    dy, cache = case((8, 5), 1, 0.0, 0)
    with pytest.raises(ValueError, match=match):
        tuned(dy, cache, out=make_out(dy, cache))


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_dy_is_refused(tuned, bad):
    dy, cache = case((8, 3, 2, 2), 2, 0.0, 0)
    dy[3, 1, 0, 1] = bad
    with pytest.raises(ValueError, match="dy must be finite"):
        tuned(dy, cache)


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_a_sum_beyond_float64_is_refused(tuned):
    dy, cache = case((8, 3), 2, 0.0, 0)
    dy[:] = 1e308
    with pytest.raises(ValueError, match="dbeta overflows float64"):  # sum(dy) = 8e308 does not fit
        tuned(dy, cache)


@pytest.mark.parametrize("tuned", TUNED, ids=lambda f: f.__name__)
def test_bad_dy_and_cache_are_refused(tuned):
    dy, cache = case((8, 3), 2, 0.0, 0)
    with pytest.raises(ValueError, match="dy has shape"):
        tuned(dy[:, :2], cache)
    with pytest.raises(ValueError, match="Cache"):
        tuned(dy, {"xhat": dy})
    x = np.random.default_rng(0).standard_normal((8, 3))
    _, layer_cache = normalize_forward(x, np.ones((1, 3)), np.zeros((1, 3)), (1,), 1e-5, 0, param_axes=(0,))
    with pytest.raises(ValueError, match="batch norm's axes"):
        tuned(dy, layer_cache)


def test_integer_dy_is_cast_like_backward():
    dy, cache = case((10, 4), 4, 0.0, 0)
    dy_int = np.arange(40).reshape(10, 4) % 7
    assert max_rel(backward_fast(dy_int, cache)[0], backward(dy_int, cache)[0]) <= 1e-12


EXACT_HELPERS = ("_coef", "_store_sums", "_col_shift", "_statistics", "_exponent_span")


def test_every_jitted_function_names_its_flags_and_the_exact_helpers_have_none():
    # numba compiles a function that names no fastmath flags with those of the kernel that calls it
    jitted = {name: f for name, f in vars(fast).items() if isinstance(f, fast.numba.core.registry.CPUDispatcher)}
    assert {"_backward_jit", "_forward_jit", *EXACT_HELPERS} <= set(jitted)
    assert [name for name, f in jitted.items() if "fastmath" not in f.targetoptions] == []
    assert all(jitted[name].targetoptions["fastmath"] is False for name in EXACT_HELPERS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_coef_rounds_as_written_after_the_kernel_compiled_it(dtype):
    # The kernel compiles _coef for this signature first; the Python call below reuses that compiled code.
    rng = np.random.default_rng(3)
    x = 2 + rng.standard_normal((40, 24)).astype(dtype)
    _, cache = forward(x, rng.standard_normal(24).astype(dtype), rng.standard_normal(24).astype(dtype))
    backward_fast(x, cache)
    for trial in range(200):
        gamma, inv_s, scale = (rng.standard_normal(24).astype(dtype) * 10.0 ** rng.uniform(-3, 3) for _ in range(3))
        dgamma, dbeta = rng.standard_normal(24) * 1e3, rng.standard_normal(24) * 1e3
        inv_bd, inv_b = 1 / float(rng.integers(2, 500)), 1 / float(rng.integers(2, 500))
        a, b, c = fast._coef(gamma, inv_s, inv_bd, inv_b, dgamma, dbeta, scale)
        a64 = (gamma * inv_s).astype(np.float64)
        assert np.array_equal(a, gamma * inv_s)
        assert np.array_equal(b, (-a64 * dgamma * inv_bd * scale).astype(dtype))  # left to right, as numpy rounds
        assert np.array_equal(c, (-a64 * dbeta * inv_b).astype(dtype))


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetched", "plain"])
@pytest.mark.parametrize("lazy", [False, True], ids=["xhat", "x"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d", [(4, 16), (7, 8), (65, 17), (131, 33), (9, 70), (130, 15), (5, 7)])
def test_the_first_pass_sums_every_row_and_column(n, d, dtype, threads, lazy, prefetch, monkeypatch):
    # The (N, D) first pass sums four rows at a time; from PREFETCH_MIN_BYTES (forced here) the whole vectors
    # in LLVM IR (`_prefetch`) and the other columns in numba: widths below, at and across the lane counts (8 and 16),
    # rows past 64-row blocks and not a multiple of 4, on two threads each half, from xhat (forward's cache)
    # and from x with mu as the shift (forward_fast's). A row or column left out, counted twice or not shifted
    # is an error of order one; rounding in partial sums of at most 64 rows is below 64 ulps of the terms.
    monkeypatch.setattr(fast, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(fast, "PREFETCH_MIN_BYTES", 0 if prefetch else 1 << 62)
    rng = np.random.default_rng(n * d)
    x = (5 + rng.standard_normal((n, d))).astype(dtype)
    gamma, beta = rng.uniform(0.5, 2, d).astype(dtype), rng.standard_normal(d).astype(dtype)
    _, cache = (fast.forward_fast if lazy else forward)(x, gamma, beta)
    assert isinstance(cache, fast.LazyCache) == lazy and (not lazy or cache.in_range)  # lazy: the pass reads x
    dy = (rng.standard_normal((n, d)) + 1).astype(dtype)
    _, dgamma, dbeta = backward_fast(dy, cache, threads=threads)
    xhat = (x.astype(np.float64) - cache.mu.astype(np.float64)) * cache.inv_s.astype(np.float64)
    terms = dy.astype(np.float64) * xhat
    for got, want, size in ((dbeta, dy.astype(np.float64).sum(0), np.abs(dy).sum(0)),
                            (dgamma, terms.sum(0), np.abs(terms).sum(0))):
        assert np.all(np.abs(got - want) <= 64 * np.finfo(dtype).eps * size + np.finfo(dtype).tiny)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="checks x86 instructions")
def test_the_prefetching_first_pass_asks_for_four_rows_of_both_arrays():
    # Read the machine code of a fresh compile (numba keeps no assembly for code loaded from its cache);
    # tests/test_fast_streaming.py reads the streamed second pass's. Which rows a prefetch asks for shows
    # in no value and no instruction count; the timings in benchmarks/README.md are its only check.
    x, ones = np.random.default_rng(0).standard_normal((8, 64)), np.ones(64)
    sums = fast.numba.njit(fastmath=fast._FLAGS)(fast._col_sums.py_func)
    sums(x, x, ones, ones, 0, 8, np.zeros(64), np.zeros(64), True)
    asm = "\n".join(sums.inspect_asm().values())
    assert asm.count("prefetcht1") >= 8  # llvm.prefetch, locality 2 (into L2): rows ahead..ahead+3 of dy and src


@pytest.mark.parametrize(("tuned", "threads"), [(backward_fast, 1), (backward_fast, 2), (backward_blocked, 1)],
                         ids=["fast", "fast-2-threads", "blocked"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 3), (4, 3, 4, 4), (8192, 64)])  # the last reaches PARALLEL_MIN_BYTES
@pytest.mark.parametrize("zero", [False, True], ids=["all tiny", "zero beside tiny"])
def test_a_factor_gamma_over_s_that_underflows_hands_over_to_backward(tuned, threads, shape, dtype, zero):
    # gamma tiny, s and dy large: a = gamma/s is subnormal (not 0), though dx = a*dy + ... is a normal number.
    # Without a zero, in_range is False; with one, it is True (0 stands for min |gamma|) and only the factor
    # itself shows it. `backward` forms gamma*dy first and rescales; the tuned ones must hand over to it,
    # before writing dx: out=dy gives the same result.
    rng = np.random.default_rng(15)
    info = np.finfo(dtype)
    big, tiny = {np.float64: (2.0**40, 2.0**-1000), np.float32: (2.0**12, 2.0 ** (info.minexp + 4))}[dtype]  # s: in range
    x = (big * rng.standard_normal(shape)).astype(dtype)
    gamma = np.resize(np.array([0.0 if zero else tiny, tiny, 1.0 if zero else tiny], dtype), shape[1])
    dy = (2.0 ** (info.maxexp // 2) * rng.standard_normal(shape)).astype(dtype)
    _, cache = forward(x, gamma, np.zeros(shape[1], dtype))
    assert cache.in_range == zero and 0 < np.abs(gamma[1] * cache.inv_s.ravel()[1]) < info.tiny
    want = backward(dy, cache)
    assert np.max(np.abs(np.take(want[0], 1, axis=1))) > info.tiny  # the tiny channel's dx is a normal number
    kwargs = {"threads": threads} if tuned is backward_fast else {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "PARALLEL_MIN_BYTES", 1 << 21)  # the setting the text gives: these split on 2 threads
        for out in (None, dy.copy()):
            got = tuned(dy if out is None else out, cache, out=out, **kwargs)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)  # computed by `backward` itself, from an intact dy


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("dtype", "x_scale", "dy_scale"), [(np.float64, 2.0**180, 2.0**-750), (np.float32, 2.0**18, 2.0**-100),
                                                          (np.float32, 2.0**-17, 2.0**-118)])
def test_a_lazy_cache_with_tiny_dy_loses_no_digits(monkeypatch, threads, dtype, x_scale, dy_scale):
    # Reading x, b carries 1/s and x - mu carries s back: a b below the normal numbers loses digits that dx
    # has; with s small, the first pass's products dy*(x - mu) underflow instead. Both hand over to `backward`.
    monkeypatch.setattr(fast, "PARALLEL_MIN_BYTES", 0)
    rng = np.random.default_rng(17)
    x = (x_scale * rng.standard_normal((64, 4))).astype(dtype)
    gamma, beta = np.array([1.0, 0.5, -2.0, 1.5], dtype), np.zeros(4, dtype)
    dy = (dy_scale * rng.standard_normal(x.shape)).astype(dtype)
    eps = 1e-30 if x_scale < 1 else 1e-5
    _, lazy = fast.forward_fast(x, gamma, beta, eps=eps)
    assert isinstance(lazy, fast.LazyCache) and lazy.in_range  # backward_fast reads x
    want = backward(dy, forward(x, gamma, beta, eps=eps)[1])
    got = backward_fast(dy, lazy, threads=threads)
    for g, w in zip(got, want):
        assert max_rel(g, w) <= 16 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 3), (4, 3, 4, 4)])
def test_a_gamma_of_zero_is_computed_by_the_tuned_passes(monkeypatch, shape, dtype):
    # a = gamma/s is 0 there, exactly: no digits lost, so no reason to hand over to `backward`
    rng = np.random.default_rng(16)
    x = (2.0 + rng.standard_normal(shape)).astype(dtype)
    gamma, beta = np.array([0.0, 1.5, -0.5], dtype), rng.standard_normal(3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, lazy = fast.forward_fast(x, gamma, beta)
    assert isinstance(lazy, fast.LazyCache)  # forward_fast's own passes
    want = backward(dy, forward(x, gamma, beta)[1])
    handed_over = []
    monkeypatch.setattr(fast, "backward", lambda *args: handed_over.append(1) or backward(*args))
    for tuned, cache in ((backward_fast, lazy), (backward_blocked, forward(x, gamma, beta)[1])):
        got = tuned(dy, cache)
        for g, w, size in zip(got, want, term_scales(dy, forward(x, gamma, beta)[1])):
            assert max_rel(g, w, size) <= 64 * np.finfo(dtype).eps
    assert handed_over == []
