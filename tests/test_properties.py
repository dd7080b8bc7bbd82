"""Property tests: three hand-written backwards agree with each other, finite differences and autograd."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import bnbackprop as bn
from bnbackprop.batches import random_batch
from bnbackprop.reference import autograd_backward

flat_shapes = st.tuples(st.integers(2, 64), st.integers(1, 17))
nchw_shapes = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 3), st.integers(2, 3))
shapes = st.one_of(flat_shapes, nchw_shapes)
scales = st.sampled_from([1e-3, 1e-1, 1.0, 10.0, 1e3])
offsets = st.sampled_from([0.0, -3.0, 50.0, 1e3, 1e6])
epses = st.sampled_from([0.0, 1e-5, 1e-2])
ddofs = st.sampled_from([0, 1])
seeds = st.integers(0, 2**32 - 1)


def conditioned(tol, offset_ratio):
    """`tol` while the offset is under 1e4 spreads; beyond, the input itself limits agreement.

    x = offset + spread * noise carries x - mu only to about 1e-16 * offset / spread, and the
    versions differ in where that error enters (the compact form assumes sum(x - mu) = 0 exactly,
    the staged one sums it), so the bound grows with offset / spread.
    """
    return tol * max(1.0, abs(offset_ratio) / 1e4)


def _all_close(a_triple, b_triple, tol, cache, dy):
    """Each of (dx, dgamma, dbeta) agrees to `tol`, relative to its natural size.

    dx is measured against |gamma * dy| / s, the size its terms have before they cancel: at B = 2
    and eps = 0 the exact dx is 0 and each version leaves only rounding noise.
    """
    dx_size = float(np.max(np.abs(cache.gamma * dy)) * np.max(cache.inv_s))
    dx_a, dx_b = a_triple[0], b_triple[0]
    errors = [float(np.max(np.abs(dx_a - dx_b))) / max(dx_size, np.max(np.abs(dx_a)))]
    errors += [bn.scaled_error(a, b) for a, b in zip(a_triple[1:], b_triple[1:])]
    assert max(errors) <= tol, errors


@given(shapes, scales, offsets, epses, ddofs, seeds)
def test_compact_staged_and_engine_agree(shape, scale, offset, eps, ddof, seed):
    x, gamma, beta, dy = random_batch(seed, shape, scale, offset * scale)
    _, cache = bn.forward(x, gamma, beta, eps=eps, ddof=ddof)
    compact = bn.backward(dy, cache)
    _all_close(compact, bn.backward_staged(dy, cache), conditioned(1e-12, offset), cache, dy)
    _all_close(compact, bn.engine_backward(dy, x, gamma, beta, eps, ddof), conditioned(1e-12, offset), cache, dy)


@given(shapes, scales, offsets, epses, ddofs, seeds)
def test_compact_agrees_with_autograd(shape, scale, offset, eps, ddof, seed):
    x, gamma, beta, dy = random_batch(seed, shape, scale, offset * scale)
    _, cache = bn.forward(x, gamma, beta, eps=eps, ddof=ddof)
    _all_close(bn.backward(dy, cache), autograd_backward(dy, x, gamma, beta, eps, ddof), conditioned(1e-10, offset), cache, dy)


# Finite differences need the offset to stay within a few hundred spreads of the data: at
# offset/scale = 1e6 the input itself carries only ~1e-10 relative precision in x - mu.
@given(st.one_of(st.tuples(st.integers(2, 24), st.integers(1, 9)), nchw_shapes),
       scales, st.sampled_from([0.0, 2.0, 100.0]), epses, ddofs, seeds)
def test_all_three_agree_with_finite_differences(shape, scale, offset, eps, ddof, seed):
    x, gamma, beta, dy = random_batch(seed, shape, scale, offset * scale)
    _, cache = bn.forward(x, gamma, beta, eps=eps * scale**2, ddof=ddof)
    loss = lambda v: float(np.sum(bn.forward(v, gamma, beta, eps=eps * scale**2, ddof=ddof)[0] * dy))
    dx_fd = bn.numerical_gradient(loss, x, h=1e-5 * scale)
    dx_size = float(np.max(np.abs(cache.gamma * dy)) * np.max(cache.inv_s))
    for dx in (bn.backward(dy, cache)[0], bn.backward_staged(dy, cache)[0],
               bn.engine_backward(dy, x, gamma, beta, eps * scale**2, ddof)[0]):
        assert np.max(np.abs(dx - dx_fd)) <= 1e-7 * dx_size


@given(shapes, st.sampled_from([1e-2, 1.0, 1e2]), st.sampled_from([0.0, 3.0]), ddofs, seeds)
def test_float32_tracks_float64(shape, scale, offset, ddof, seed):
    """float32 keeps about 7 digits; after two reductions the gradients agree to 1e-4 of their size."""
    x, gamma, beta, dy = random_batch(seed, shape, scale, offset * scale, dtype=np.float32)
    _, c32 = bn.forward(x, gamma, beta, eps=1e-5 * scale**2, ddof=ddof)
    _, c64 = bn.forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64),
                        eps=1e-5 * scale**2, ddof=ddof)
    out32 = bn.backward(dy, c32)
    assert all(a.dtype == np.float32 for a in out32)
    _all_close(out32, bn.backward(dy.astype(np.float64), c64), 1e-4, c64, dy)


@given(shapes, scales, ddofs, seeds)
def test_engine_vjp_passes_random_direction_check(shape, scale, ddof, seed):
    x, gamma, beta, dy = random_batch(seed, shape, scale)
    f = lambda v: bn.forward(v, gamma, beta, eps=1e-3 * scale**2, ddof=ddof)[0]
    vjp = lambda u: bn.engine_backward(u, x, gamma, beta, 1e-3 * scale**2, ddof)[0]
    bn.check_vjp(f, vjp, x, np.random.default_rng(seed), tol=1e-6, h=1e-5 * scale)
