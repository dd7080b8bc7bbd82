"""Eval mode: running statistics are constants, so the backward has no projection."""

from __future__ import annotations

import numpy as np
import pytest

import bnbackprop as bn
from bnbackprop.batches import random_batch
from bnbackprop.gradcheck import numerical_gradient


@pytest.mark.parametrize("shape", [(1, 3), (5, 3), (2, 3, 4, 2)])
def test_eval_backward_matches_finite_differences_and_formula(shape):
    x, gamma, beta, dy = random_batch(11, shape, 3.0, 2.0)
    rng = np.random.default_rng(12)
    rmean, rvar = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    y, cache = bn.forward_eval(x, gamma, beta, rmean, rvar, eps=1e-3)
    dx, dgamma, dbeta = bn.backward_eval(dy, cache)
    bshape = (1, 3) + (1,) * (len(shape) - 2)
    s = np.sqrt(rvar + 1e-3).reshape(bshape)
    np.testing.assert_allclose(y, gamma.reshape(bshape) * (x - rmean.reshape(bshape)) / s + beta.reshape(bshape))
    np.testing.assert_allclose(dx, gamma.reshape(bshape) * dy / s, rtol=1e-14)
    loss = lambda f: lambda v: float(np.sum(f(v) * dy))
    fwd = lambda **kw: bn.forward_eval(**{"x": x, "gamma": gamma, "beta": beta, "running_mean": rmean,
                                          "running_var": rvar, "eps": 1e-3, **kw})[0]
    np.testing.assert_allclose(dx, numerical_gradient(loss(lambda v: fwd(x=v)), x), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dgamma, numerical_gradient(loss(lambda v: fwd(gamma=v)), gamma), rtol=1e-7)
    np.testing.assert_allclose(dbeta, numerical_gradient(loss(lambda v: fwd(beta=v)), beta), rtol=1e-7)


def test_running_stats_follow_pytorch():
    """running = (1 - m) running + m batch, with the unbiased batch variance, whatever the forward's ddof."""
    x, gamma, beta, _ = random_batch(13, (8, 3, 2, 2), 2.0, 5.0)
    rmean, rvar = np.array([0.1, -0.2, 0.3]), np.array([1.0, 2.0, 0.5])
    axes = (0, 2, 3)
    for ddof in (0, 1):
        cache = bn.forward(x, gamma, beta, ddof=ddof)[1]
        new_mean, new_var = bn.update_running_stats(rmean, rvar, cache, momentum=0.25)
        np.testing.assert_allclose(new_mean, 0.75 * rmean + 0.25 * x.mean(axis=axes))
        np.testing.assert_allclose(new_var, 0.75 * rvar + 0.25 * x.var(axis=axes, ddof=1))


def test_eval_mode_with_batch_statistics_is_not_training_mode():
    """Same numbers forward, different gradient: training projects, eval does not."""
    x, gamma, beta, dy = random_batch(14, (6, 2), 1.0, 0.0)
    _, train = bn.forward(x, gamma, beta, eps=1e-5)
    _, evalc = bn.forward_eval(x, gamma, beta, train.mu.ravel(), train.var.ravel(), eps=1e-5)
    np.testing.assert_allclose(evalc.xhat, train.xhat, rtol=1e-12)
    dx_train, dx_eval = bn.backward(dy, train)[0], bn.backward_eval(dy, evalc)[0]
    np.testing.assert_allclose(dx_train, dx_eval - dx_eval.mean(0) - train.xhat * (dx_eval * train.xhat).mean(0),
                               rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(dx_train - dx_eval)) > 1e-3
