"""Bad input gets a ValueError that names the problem and the expected form."""

from __future__ import annotations

import numpy as np
import pytest

import bnbackprop as bn
from bnbackprop.batches import random_batch

X, GAMMA, BETA, DY = random_batch(0, (6, 4), 2.0, 1.0)


@pytest.mark.parametrize("x, match", [
    (np.ones(5), r"shape \(5,\); expected x of shape \(N, D\) or \(N, C, \.\.\.\)"),
    (np.float64(3.0), r"shape \(\); expected x of shape"),
    (np.ones((0, 4)), r"empty axis"),
])
def test_x_of_the_wrong_rank(x, match):
    with pytest.raises(ValueError, match=match):
        bn.forward(x, GAMMA, BETA)


@pytest.mark.parametrize("name", ["gamma", "beta"])
@pytest.mark.parametrize("bad", [np.ones(3), np.ones((1, 4)), np.ones(5)])
def test_parameters_of_the_wrong_shape(name, bad):
    kwargs = {"gamma": GAMMA, "beta": BETA, name: bad}
    with pytest.raises(ValueError, match=rf"{name} has shape {re_shape(bad.shape)}; expected \(4,\), one value per channel"):
        bn.forward(X, **kwargs)


def re_shape(shape):
    """A shape as it prints, escaped for a regex."""
    return str(shape).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1, 1)])
def test_one_value_per_channel_in_training(shape):
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training.*xhat = 0, y = beta and dx = 0"):
        bn.forward(np.ones(shape), np.ones(shape[1]), np.zeros(shape[1]))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.batchnorm_graph(np.ones(shape), np.ones(shape[1]), np.zeros(shape[1]))


def test_batch_of_one_with_spatial_extent_is_fine():
    y, _ = bn.forward(np.arange(6.0).reshape(1, 2, 3), np.ones(2), np.zeros(2))
    assert y.shape == (1, 2, 3)


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf"), "0.1", np.ones(2)])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0"):
        bn.forward(X, GAMMA, BETA, eps=eps)


def test_eps_zero_with_a_constant_channel():
    x = X.copy()
    x[:, 2] = 0.1  # rounding leaves a tiny var, not 0, so the check must not test var == 0
    with pytest.raises(ValueError, match=r"eps = 0 with a channel of zero variance.*Use eps > 0"):
        bn.forward(x, GAMMA, BETA, eps=0.0)
    with pytest.raises(ValueError, match=r"zero variance"):
        bn.batchnorm_graph(x, GAMMA, BETA, eps=0.0)
    y, _ = bn.forward(x, GAMMA, BETA, eps=1e-5)
    np.testing.assert_allclose(y[:, 2], BETA[2], atol=1e-6)


@pytest.mark.parametrize("where", ["x", "gamma", "beta"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(where, bad):
    args = {"x": X.copy(), "gamma": GAMMA.copy(), "beta": BETA.copy()}
    args[where].flat[1] = bad
    with pytest.raises(ValueError, match=rf"{where} must be finite; it holds 1 NaN or infinite value"):
        bn.forward(**args)


@pytest.mark.parametrize("backward", [bn.backward, bn.backward_staged])
def test_non_finite_dy(backward):
    dy = DY.copy()
    dy[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"dy must be finite"):
        backward(dy, bn.forward(X, GAMMA, BETA)[1])


@pytest.mark.parametrize("backward", [bn.backward, bn.backward_staged])
def test_dy_of_another_shape(backward):
    with pytest.raises(ValueError, match=r"dy has shape \(4, 6\); expected \(6, 4\), the shape of y"):
        backward(DY.T, bn.forward(X, GAMMA, BETA)[1])


def test_integers_are_cast_to_float():
    y, cache = bn.forward(np.arange(12).reshape(4, 3), [1, 2, 3], [0, 0, 1])
    assert y.dtype == np.float64 and cache.xhat.dtype == np.float64
    dx, _, _ = bn.backward(np.ones((4, 3), dtype=int), cache)
    assert dx.dtype == np.float64


@pytest.mark.parametrize("bad", [np.array([["a", "b"], ["c", "d"]]), np.ones((3, 2), dtype=complex),
                                 np.ones((3, 2), dtype=bool), np.array([[None, 1], [2, 3]], dtype=object)])
def test_non_numeric_input_is_refused(bad):
    with pytest.raises(ValueError, match=r"x must hold real floating-point \(or integer\) numbers; got dtype"):
        bn.forward(bad, np.ones(2), np.zeros(2))


@pytest.mark.parametrize("ddof", [2, -1, 0.5, True])
def test_bad_ddof(ddof):
    with pytest.raises(ValueError, match=r"ddof must be 0 \(biased variance\) or 1 \(Bessel's correction\)"):
        bn.forward(X, GAMMA, BETA, ddof=ddof)


def test_eval_mode_refuses_negative_running_var():
    with pytest.raises(ValueError, match=r"running_var must be >= 0"):
        bn.forward_eval(X, GAMMA, BETA, np.zeros(4), -np.ones(4))
    with pytest.raises(ValueError, match=r"running_var \+ eps must be > 0"):
        bn.forward_eval(X, GAMMA, BETA, np.zeros(4), np.zeros(4), eps=0.0)


def test_eval_mode_refuses_running_stats_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"running_mean has shape \(3,\); expected \(4,\)"):
        bn.forward_eval(X, GAMMA, BETA, np.zeros(3), np.ones(4))


@pytest.mark.parametrize("momentum", [-0.1, 1.5, "0.1"])
def test_bad_momentum(momentum):
    cache = bn.forward(X, GAMMA, BETA)[1]
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\]"):
        bn.update_running_stats(np.zeros(4), np.ones(4), cache, momentum=momentum)


def test_engine_refuses_a_seed_of_the_wrong_shape():
    graph = bn.batchnorm_graph(X, GAMMA, BETA)
    with pytest.raises(ValueError, match=r"seed has shape \(4, 6\); expected \(6, 4\)"):
        graph.backward(DY.T)


def test_engine_backward_checks_dy():
    dy = DY.copy()
    dy[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"dy must be finite"):
        bn.engine_backward(dy, X, GAMMA, BETA)


def test_engine_refuses_a_non_finite_seed():
    graph = bn.batchnorm_graph(X, GAMMA, BETA)
    seed = DY.copy()
    seed[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"seed must be finite"):
        graph.backward(seed)


@pytest.mark.parametrize("backward", [bn.backward, bn.backward_staged])
def test_backward_needs_the_forward_cache(backward):
    with pytest.raises(ValueError, match=r"cache must be the Cache that bnbackprop.forward returned; got tuple"):
        backward(DY, (1, 2, 3))


def test_running_stats_need_two_values_per_channel():
    _, cache = bn.normalize_forward(X[:1], GAMMA[None], BETA[None], axes=(0,))
    with pytest.raises(ValueError, match=r"unbiased variance needs at least 2 values per channel; the cache has B = 1"):
        bn.update_running_stats(np.zeros(4), np.ones(4), cache)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": -1.0}, r"eps must be a finite number >= 0"),
    ({"ddof": 2}, r"ddof must be 0"),
    ({"axes": (0, 0)}, r"names an axis twice"),
    ({"axes": (2,)}, r"out of range for an array with 2 dimensions"),
    ({"axes": "0"}, r"axes must be an int or a tuple of ints"),
    ({"gamma_b": np.ones((6, 1))}, r"gamma_b has shape \(6, 1\); expected \(1, 4\): 1 along param_axes"),
    ({"beta_b": np.ones(4)}, r"beta_b has shape \(4,\); expected \(1, 4\)"),
    ({"x": X[:1], "ddof": 1}, r"hold 1 value\(s\) per statistic; with ddof=1 the variance divides by B - ddof = 0"),
    ({"x": np.where(np.eye(6, 4) > 0, np.nan, X)}, r"x must be finite"),
])
def test_normalize_forward_checks_its_input(kwargs, match):
    x = kwargs.pop("x", X)
    args = {"gamma_b": GAMMA[None], "beta_b": BETA[None], "axes": (0,), **kwargs}
    with pytest.raises(ValueError, match=match):
        bn.normalize_forward(x, **args)


def test_normalize_forward_allows_one_value_with_ddof_zero():
    """Chapter 6 needs the unguarded B = 1 case to show what training would do with it."""
    y, cache = bn.normalize_forward(X[:1], GAMMA[None], BETA[None], axes=(0,))
    np.testing.assert_array_equal(cache.xhat, 0.0)
    np.testing.assert_allclose(y, BETA[None])
