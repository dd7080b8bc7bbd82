"""Low precision: running sums, the forward and backward per dtype, Welford and Chan, PyTorch's half (if installed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnbackprop.batchnorm import backward, forward
from bnbackprop.gradcheck import scaled_error
from bnbackprop.lowprec import (
    DTYPES,
    Moments,
    as_dtype,
    backward_lowprec,
    backward_sums,
    chan_merge,
    forward_lowprec,
    moments_in_chunks,
    running_sum,
    unit_roundoff,
    variance_one_pass,
    variance_two_pass,
    welford,
)

def batch(seed, shape, offset, scale, dtype):
    """x = offset + scale * noise (with channel shifts), random gamma, beta, dy, all stored in dtype."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = offset + scale * (rng.standard_normal(shape) + 0.5 * rng.normal(size=(1, C) + (1,) * (len(shape) - 2)))
    gamma = rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C)
    return tuple(a.astype(dtype) for a in (x, gamma, rng.normal(size=C), rng.standard_normal(shape)))


def test_running_sum_rounds_every_addition():
    """Sequential float16 and bfloat16 sums stall where the next 1 is below half a spacing; float32 does not."""
    ones = np.ones((3000, 2))
    assert np.all(running_sum(ones.astype(np.float16), (0,), "float16") == 2048)  # 2048 + 1 rounds to 2048 (ties to even)
    assert np.all(running_sum(ones.astype(DTYPES["bfloat16"]), (0,), "bfloat16").astype(float) == 256)
    assert np.all(running_sum(ones.astype(np.float16), (0,), "float32") == 3000)
    assert np.sum(ones[:, 0].astype(np.float16)) == 3000  # numpy's own float16 sum is not a float16 running sum


def test_running_sum_matches_a_python_loop_over_several_axes():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    total = running_sum(a, (0, 2, 3), "float32")
    assert total.shape == (1, 2, 1, 1)
    for c in range(2):
        acc = np.float32(0)
        for v in np.transpose(a, (0, 2, 3, 1))[..., c].ravel():
            acc = np.float32(acc + v)
        assert total[0, c, 0, 0] == acc  # the same additions in the same order: IEEE gives the same bits


@pytest.mark.parametrize("shape", [(64, 3), (4, 3, 5, 6)])
@pytest.mark.parametrize("ddof", [0, 1])
def test_float64_agrees_with_the_library(shape, ddof):
    for seed in range(5):
        x, gamma, beta, dy = batch(seed, shape, offset=3.0, scale=2.0, dtype=np.float64)
        y, cache = forward_lowprec(x, gamma, beta, eps=1e-3, ddof=ddof)
        y_ref, cache_ref = forward(x, gamma, beta, eps=1e-3, ddof=ddof)
        assert scaled_error(y, y_ref) < 1e-13
        for a, b in zip(backward_lowprec(dy, cache), backward(dy, cache_ref)):
            assert scaled_error(a, b) < 1e-12


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
def test_accumulating_in_float32_costs_a_few_roundings_of_the_storage_dtype(name):
    """With float32 sums and moderate offsets, y and dx are off by a few units of the storage dtype's roundoff."""
    roundoff = unit_roundoff(name)
    for seed in range(4):
        for offset, scale in ((0.0, 1.0), (5.0, 1.0), (0.0, 1e-3), (0.0, 300.0)):
            x, gamma, beta, dy = batch(seed, (128, 4), offset, scale, DTYPES[name])
            y, cache = forward_lowprec(x, gamma, beta, acc="float32")
            assert y.dtype == DTYPES[name]
            y_ref, cache_ref = forward(*(a.astype(np.float64) for a in (x, gamma, beta)))
            dx = backward_lowprec(dy, cache)[0]
            dx_ref = backward(dy.astype(np.float64), cache_ref)[0]
            bound = 8 * roundoff if name != "float32" else 64 * roundoff * 128  # float32 sums add B roundings of float32
            assert scaled_error(y.astype(np.float64), y_ref) < bound
            assert scaled_error(dx.astype(np.float64), dx_ref) < bound


def test_float16_accumulation_overflow_is_refused():
    x, gamma, beta, dy = batch(0, (256, 3), offset=0.0, scale=100.0, dtype=np.float16)
    with pytest.raises(ValueError, match="overflowed.*float32"):
        forward_lowprec(x, gamma, beta, acc="float16")
    y, _ = forward_lowprec(x, gamma, beta, acc="float32")
    assert np.all(np.isfinite(y))


def test_the_raw_backward_sum_cancels_and_the_centered_one_does_not():
    """sum(g*x) - mu*sum(g) loses about offset/spread times more than sum(g*(x - mu)), in float32."""
    for seed in range(3):
        x, gamma, beta, dy = batch(seed, (256, 8), offset=1e4, scale=1.0, dtype=np.float32)
        _, cache = forward_lowprec(x, gamma, beta)
        g = cache.gamma.astype(np.float64) * dy
        exact = (g * (x.astype(np.float64) - cache.mu.astype(np.float64))).sum(axis=0, keepdims=True)  # same mu
        centered = scaled_error(backward_sums(dy, cache)[1].astype(np.float64), exact)
        raw = scaled_error(backward_sums(dy, cache, centered=False)[1].astype(np.float64), exact)
        assert centered < 64 * unit_roundoff("float32") * 16 and raw > 100 * centered


@given(seed=st.integers(0, 2**16), n=st.integers(2, 60), C=st.integers(1, 4),
       offset=st.sampled_from([0.0, 7.0, -1e3]), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       chunks=st.integers(1, 6))
def test_welford_and_chan_agree_with_the_two_pass_variance(seed, n, C, offset, scale, chunks):
    x = offset + scale * np.random.default_rng(seed).standard_normal((n, C))
    ref = x.var(axis=0)
    tol = 1e-12 * (1 + abs(offset) / scale) ** 2  # float64 rounding of the mean, relative to the spread
    np.testing.assert_allclose(welford(x, "float64").var(), ref, rtol=tol)
    np.testing.assert_allclose(welford(x, "float64").mean, x.mean(axis=0), rtol=1e-13, atol=1e-13 * scale)
    np.testing.assert_allclose(moments_in_chunks(x, min(chunks, n), "float64").var(), ref, rtol=tol)
    np.testing.assert_allclose(variance_two_pass(x, "float64"), ref, rtol=tol)


def test_chan_merge_of_two_groups_is_the_moments_of_the_union():
    rng = np.random.default_rng(4)
    a, b = 5 + rng.standard_normal((7, 3)), 9 + 2 * rng.standard_normal((12, 3))
    merged = chan_merge(welford(a, "float64"), welford(b, "float64"))
    both = np.concatenate([a, b])
    assert merged.count == 19
    np.testing.assert_allclose(merged.mean, both.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(merged.var(ddof=1), both.var(axis=0, ddof=1), rtol=1e-13)


def test_one_pass_variance_fails_where_welford_and_two_pass_hold():
    for seed in range(3):
        x = (1e3 + np.random.default_rng(seed).standard_normal((256, 16))).astype(np.float32)
        ref = x.astype(np.float64).var(axis=0)
        assert np.max(np.abs(variance_one_pass(x, "float32") - ref) / ref) > 0.1
        for var in (variance_two_pass(x, "float32"), welford(x, "float32").var(), moments_in_chunks(x, 8, "float32").var()):
            assert np.max(np.abs(var - ref) / ref) < 1e-3


def test_refuses_bad_input():
    x, gamma, beta, dy = batch(0, (8, 2), 0.0, 1.0, np.float32)
    with pytest.raises(TypeError, match="acc"):
        forward_lowprec(x, gamma, beta, acc="int8")
    with pytest.raises(TypeError, match="x.dtype"):
        forward_lowprec(x.astype(np.complex64), gamma, beta)
    with pytest.raises(TypeError, match="gamma"):
        forward_lowprec(x, gamma.astype(np.float64), beta)
    with pytest.raises(ValueError, match="eps"):
        forward_lowprec(x, gamma, beta, eps=0.0)
    with pytest.raises(ValueError, match="beta"):
        forward_lowprec(x, gamma, beta[:1])
    _, cache = forward_lowprec(x, gamma, beta)
    with pytest.raises(ValueError, match="dy"):
        backward_lowprec(dy[:3], cache)
    with pytest.raises(ValueError, match="cache"):
        backward_lowprec(dy, None)
    with pytest.raises(ValueError, match="chunks"):
        moments_in_chunks(x, 9, "float32")
    with pytest.raises(TypeError, match="Moments"):
        chan_merge(welford(x, "float32"), (1, 2, 3))
    with pytest.raises(ValueError, match="ddof"):
        Moments(1, np.zeros(2), np.zeros(2)).var(ddof=1)
    assert as_dtype("bfloat16") == DTYPES["bfloat16"] and as_dtype(np.float16) == np.dtype(np.float16)


def test_pytorch_half_computes_its_statistics_in_float():
    """PyTorch's float32 result, rounded to float16, is ours with float32 sums to one float16 rounding."""
    torch = pytest.importorskip("torch")
    for seed in range(3):
        for offset, scale in ((0.0, 1.0), (0.0, 100.0)):
            x, gamma, beta, _ = batch(seed, (128, 6), offset, scale, np.float16)
            y, _ = forward_lowprec(x, gamma, beta, acc="float32")
            t = [torch.tensor(a) for a in (x, gamma, beta)]
            y16 = torch.nn.functional.batch_norm(t[0], None, None, t[1], t[2], training=True, eps=1e-5).numpy()
            assert y16.dtype == np.float16 and np.all(np.isfinite(y16))  # float16 sums would overflow at scale 100
            y32 = torch.nn.functional.batch_norm(*(a.float() for a in t[:1]), None, None, *(a.float() for a in t[1:]),
                                                 training=True, eps=1e-5).numpy().astype(np.float16)
            assert scaled_error(y32.astype(np.float64), y.astype(np.float64)) <= 2 * unit_roundoff("float16")
            assert scaled_error(y16.astype(np.float64), y.astype(np.float64)) <= 4 * unit_roundoff("float16")
