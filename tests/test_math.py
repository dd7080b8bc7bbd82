"""The mathematical facts the book states, each as a test that fails if the fact were false."""

from __future__ import annotations

import numpy as np
import pytest

import bnbackprop as bn
from bnbackprop.batches import random_batch
from bnbackprop import engine

SHAPES = [(7, 3), (5, 4, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_dx_sums_to_zero_per_channel(shape, ddof, eps):
    x, gamma, beta, dy = random_batch(1, shape, 2.0, 5.0)
    dx, _, _ = bn.backward(dy, bn.forward(x, gamma, beta, eps=eps, ddof=ddof)[1])
    axes = (0,) + tuple(range(2, len(shape)))
    np.testing.assert_allclose(dx.sum(axis=axes), 0.0, atol=1e-12 * np.abs(dx).sum())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof", [0, 1])
def test_dx_orthogonal_to_xhat_only_at_eps_zero(shape, ddof):
    x, gamma, beta, dy = random_batch(2, shape, 0.5, -1.0)
    axes = (0,) + tuple(range(2, len(shape)))
    dx, cache = None, None
    for eps, zero in ((0.0, True), (0.1, False)):
        _, cache = bn.forward(x, gamma, beta, eps=eps, ddof=ddof)
        dx = bn.backward(dy, cache)[0]
        dot = np.abs((dx * cache.xhat).sum(axis=axes))
        scale = np.abs(dx * cache.xhat).sum(axis=axes)
        assert np.all(dot <= 1e-12 * scale) == zero


@pytest.mark.parametrize("a", [1e-3, 0.5, 7.0, 1e3])
def test_gradient_scales_like_one_over_a(a):
    """The seed answer's 'invariant to the input scale' is false: dx at a*x is dx / a (eps = 0)."""
    x, gamma, beta, dy = random_batch(3, (9, 4), 1.0, 2.0)
    y1, c1 = bn.forward(x, gamma, beta, eps=0.0)
    ya, ca = bn.forward(a * x, gamma, beta, eps=0.0)
    np.testing.assert_allclose(ya, y1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bn.backward(dy, ca)[0], bn.backward(dy, c1)[0] / a, rtol=1e-9, atol=1e-14 / a)


def test_batch_of_two_at_eps_zero_has_zero_gradient():
    x, gamma, beta, dy = random_batch(4, (2, 6), 3.0, 1.0)
    _, cache = bn.forward(x, gamma, beta, eps=0.0)
    np.testing.assert_allclose(np.abs(cache.xhat), 1.0, rtol=1e-12)
    dx = bn.backward(dy, cache)[0]
    np.testing.assert_allclose(dx, 0.0, atol=1e-12 * np.max(np.abs(gamma * dy) * cache.inv_s))
    _, cache_eps = bn.forward(x, gamma, beta, eps=1e-2)
    assert np.max(np.abs(bn.backward(dy, cache_eps)[0])) > 1e-6


@pytest.mark.parametrize("B", [2, 3, 5, 8])
def test_centering_jacobian_is_a_projection(B):
    x = np.random.default_rng(B).normal(3.0, 2.0, (B, 1))
    graph = bn.batchnorm_graph(x, [1.5], [0.2])
    J = sum(engine.path_jacobian(p) for p in engine.paths(graph["x"], graph["xmu"]))
    np.testing.assert_allclose(J, np.eye(B) - np.ones((B, B)) / B, atol=1e-15)
    np.testing.assert_allclose(J, J.T, atol=0)
    np.testing.assert_allclose(J @ J, J, atol=1e-14)
    assert np.linalg.matrix_rank(J) == B - 1
    np.testing.assert_allclose(J @ np.ones(B), 0.0, atol=1e-15)
    assert abs(J.sum()) < 1e-13


def test_the_two_triangle_paths_sum_to_g_minus_mean_g():
    x = np.random.default_rng(5).normal(1.0, 2.0, (6, 1))
    g = np.random.default_rng(6).normal(size=(6, 1))
    graph = bn.batchnorm_graph(x, [1.0], [0.0])
    grads = engine.backprop(graph["xmu"], seed=g)
    parts = dict((e.dst.name, c) for e, c in grads.contributions("x"))
    np.testing.assert_allclose(parts["xmu"], g)
    np.testing.assert_allclose(parts["mu"], -g.mean() * np.ones_like(g))
    np.testing.assert_allclose(grads["x"], g - g.mean(), atol=1e-15)


def test_two_pass_variance_survives_a_large_offset():
    rng = np.random.default_rng(7)
    dev = rng.normal(size=(256, 3))
    x = 1e6 + dev
    _, cache = bn.forward(x, np.ones(3), np.zeros(3), eps=0.0)
    exact = np.var(x - 1e6, axis=0)  # x - 1e6 is exact (Sterbenz), so this is the true variance of x
    np.testing.assert_allclose(cache.var.ravel(), exact, rtol=1e-9)
    one_pass = (x * x).mean(axis=0) - x.mean(axis=0) ** 2
    assert np.max(np.abs(one_pass - exact) / exact) > 1e-6  # the formula the two passes avoid


def test_ddof_one_divides_by_b_minus_one():
    x, gamma, beta, _ = random_batch(8, (6, 3), 1.0, 4.0)
    _, c0 = bn.forward(x, gamma, beta, ddof=0)
    _, c1 = bn.forward(x, gamma, beta, ddof=1)
    np.testing.assert_allclose(c0.var.ravel(), np.var(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(c1.var.ravel(), np.var(x, axis=0, ddof=1), rtol=1e-12)


def test_forward_output_has_zero_mean_unit_variance_before_affine():
    x, gamma, beta, _ = random_batch(9, (4, 3, 5, 2), 10.0, -20.0)
    y, cache = bn.forward(x, gamma, beta, eps=0.0)
    axes = (0, 2, 3)
    np.testing.assert_allclose(cache.xhat.mean(axis=axes), 0.0, atol=1e-14)
    np.testing.assert_allclose(cache.xhat.var(axis=axes), 1.0, rtol=1e-12)
    np.testing.assert_allclose(y, gamma.reshape(1, 3, 1, 1) * cache.xhat + beta.reshape(1, 3, 1, 1))
