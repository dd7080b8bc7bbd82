"""The checks can fail: each planted wrong backward is caught, and the checker rejects a wrong rule."""

from __future__ import annotations

import numpy as np
import pytest

import bnbackprop as bn
from bnbackprop.batches import random_batch
from bnbackprop.grader.bugs import BUGS
from bnbackprop.reference import autograd_backward, finite_difference_backward


def check_backward(backward_fn, shape, ddof=0, eps=1e-3, seed=41, offset=3.0):
    """The test battery's core: a backward must match autograd and finite differences on one case."""
    x, gamma, beta, dy = random_batch(seed, shape, 2.0, offset)
    out = backward_fn(dy, bn.forward(x, gamma, beta, eps=eps, ddof=ddof)[1])
    for mine, ref in zip(out, autograd_backward(dy, x, gamma, beta, eps, ddof)):
        np.testing.assert_allclose(mine, ref, rtol=1e-8, atol=1e-10)
    for mine, ref in zip(out, finite_difference_backward(dy, x, gamma, beta, eps, ddof)):
        np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backward", [bn.backward, bn.backward_staged, BUGS["mean_via_variance_dropped"].backward])
@pytest.mark.parametrize("shape, ddof", [((7, 3), 0), ((5, 5), 1), ((3, 2, 2, 3), 0)])
def test_correct_backwards_pass(backward, shape, ddof):
    check_backward(backward, shape, ddof)


@pytest.mark.parametrize("name, shape, ddof", [
    ("gamma_dropped", (7, 3), 0),
    ("wrong_axis", (5, 5), 0),  # square, so the wrong axis even runs
    ("variance_term_dropped", (7, 3), 0),
    ("bessel_mismatch", (7, 3), 1),
    ("mean_via_variance_misrestored", (7, 3), 0),
    ("eps_outside_sqrt", (7, 3), 0),
    ("missing_inv_n", (7, 3), 0),
    ("param_grads_wrong_axis", (5, 5), 0),
])
def test_each_planted_bug_is_caught(name, shape, ddof):
    with pytest.raises(AssertionError):
        check_backward(BUGS[name].backward, shape, ddof, eps=0.1)


def test_friendly_checks_miss_gamma_dropped():
    """With gamma = 1 (a common test default) the missing gamma is invisible: why tests use random gamma."""
    x, _, beta, dy = random_batch(42, (6, 3), 1.0, 0.0)
    cache = bn.forward(x, np.ones(3), beta)[1]
    for mine, ref in zip(BUGS["gamma_dropped"].backward(dy, cache), bn.backward(dy, cache)):
        np.testing.assert_allclose(mine, ref, rtol=1e-14)


def test_wrong_axis_only_runs_on_square_input():
    x, gamma, beta, dy = random_batch(43, (6, 3), 1.0, 0.0)
    with pytest.raises(ValueError):
        BUGS["wrong_axis"].backward(dy, bn.forward(x, gamma, beta)[1])


def test_the_dropped_mean_via_variance_term_really_is_zero():
    x, gamma, beta, dy = random_batch(44, (8, 4), 2.0, 7.0)
    cache = bn.forward(x, gamma, beta, ddof=1)[1]
    dvar = -0.5 * (gamma * dy * cache.xmu).sum(0) * cache.inv_s.ravel() ** 3
    term = dvar * (-2.0 * cache.xmu).sum(0) / cache.B
    np.testing.assert_allclose(term, 0.0, atol=1e-13 * np.abs(dvar).max())


def test_check_vjp_rejects_a_planted_wrong_rule():
    """HIPS autograd style: the checker itself must be able to fail."""
    rng = np.random.default_rng(45)
    x = rng.normal(size=(4, 3))
    f = lambda v: np.sin(v) * v
    right = lambda u: u * (np.cos(x) * x + np.sin(x))
    wrong = lambda u: u * np.cos(x) * x  # the product rule's second term forgotten
    bn.check_vjp(f, right, x, rng)
    with pytest.raises(AssertionError, match="VJP disagrees with finite differences"):
        bn.check_vjp(f, wrong, x, rng)


def test_rel_error_is_cs231n_definition():
    assert bn.rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert bn.rel_error([1.0, 3.0], [1.0, 1.0]) == pytest.approx(2.0 / 4.0)
    assert bn.rel_error([0.0], [1e-9]) == pytest.approx(1e-9 / 1e-8)
    with pytest.raises(ValueError, match="one shape"):
        bn.rel_error(np.ones(2), np.ones(3))


def test_numerical_gradient_and_jacobian():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    np.testing.assert_allclose(bn.numerical_gradient(lambda v: float(np.sum(v**3)), x), 3 * x**2, rtol=1e-8)
    np.testing.assert_allclose(bn.numerical_jacobian(lambda v: v**2, x), np.diag(2 * x.ravel()), atol=1e-8)


def test_a_nan_gradient_never_passes_as_small():
    rng = np.random.default_rng(46)
    x = rng.normal(size=(3, 2))
    assert bn.rel_error(np.array([0.0, np.nan]), np.array([0.0, 1.0])) == float("inf")
    assert bn.scaled_error(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == float("inf")
    with pytest.raises(AssertionError, match="VJP disagrees"):
        bn.check_vjp(np.sin, lambda u: np.full_like(u, np.nan), x, rng)
