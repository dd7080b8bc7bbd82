"""Issue 13: at the edges of floating point, dtype and misuse, a right result or a ValueError/TypeError that names the argument."""

from __future__ import annotations

import numpy as np
import pytest

from bnbackprop import engine
from bnbackprop.batchnorm import (
    backward,
    backward_eval,
    backward_staged,
    forward,
    forward_eval,
    normalize_forward,
    update_running_stats,
)
from bnbackprop.fast import backward_blocked, backward_fast
from bnbackprop.gradcheck import (
    check_vjp,
    numerical_gradient,
    numerical_jacobian,
    rel_error,
    scaled_error,
    vjp_directional_error,
)
from bnbackprop.normalizations import layer_norm

BACKWARDS = [backward, backward_staged, backward_fast, backward_blocked]
ids = lambda f: f.__name__  # noqa: E731


def batch(seed, shape, dtype=np.float64):
    """Random x with an offset, random gamma and beta, and a dy with a nonzero mean."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = 3.0 + rng.uniform(0.5, 2.0) * rng.standard_normal(shape)
    gamma = rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C)
    return (x.astype(dtype), gamma.astype(dtype), rng.normal(size=C).astype(dtype),
            (rng.standard_normal(shape) + 0.5).astype(dtype))


def grads64(dy, x, gamma, beta, eps=1e-5, ddof=0):
    """The float64 gradients of the given (possibly lower-precision) values: the reference."""
    f64 = [np.asarray(a, dtype=np.float64) for a in (dy, x, gamma, beta)]
    return backward(f64[0], forward(*f64[1:], eps=eps, ddof=ddof)[1])


# --- Overflow in the variance: computed on rescaled x, or refused naming what overflowed ----------

def test_the_issues_example_is_computed_not_beta():
    y, cache = forward([[1e200], [-1e200], [3e200]], [1.0], [0.0])
    np.testing.assert_allclose(y.ravel(), [0.0, -np.sqrt(1.5), np.sqrt(1.5)], rtol=1e-15, atol=1e-15)
    assert np.isinf(cache.var).all()  # the variance itself, 2.7e400, does not fit float64: documented
    with pytest.raises(ValueError, match=r"cache.var overflows float64, so running_var cannot hold it"):
        update_running_stats(np.zeros(1), np.ones(1), cache)


@pytest.mark.parametrize("k", [-1000, -900, -600, -300, 300, 600, 900, 1000])
@pytest.mark.parametrize("seed", range(3))
def test_forward_and_backwards_are_scale_equivariant_over_the_whole_range(k, seed):
    """xhat(2^k x) = xhat(x) with eps = 0, and dx(2^j dy; 2^k x) = 2^(j-k) dx: exact in binary, so 1e-15 holds."""
    x, gamma, beta, dy = batch(seed, (5, 3, 2))
    j = k // 2  # dx scales as 2^(j-k): both stay in range
    y_ref, cache_ref = forward(x, gamma, beta, eps=0.0)
    y, cache = forward(np.ldexp(x, k), gamma, beta, eps=0.0)
    assert scaled_error(y, y_ref) <= 1e-14
    for bwd in BACKWARDS:
        dx_ref, dgamma_ref, dbeta_ref = backward(dy, cache_ref)
        dx, dgamma, dbeta = bwd(np.ldexp(dy, j), cache)
        assert scaled_error(np.ldexp(dx, k - j), dx_ref) <= 1e-13, bwd.__name__
        assert scaled_error(np.ldexp(dgamma, -j), dgamma_ref) <= 1e-13
        assert scaled_error(np.ldexp(dbeta, -j), dbeta_ref) <= 1e-13


def test_a_spread_beyond_float64_is_refused_naming_x_minus_mu():
    x = np.array([[1.7e308], [-1.7e308], [-1.7e308]])  # mu = -5.7e307, so x - mu = 2.3e308
    with pytest.raises(ValueError, match=r"x - mu overflows float64"):
        forward(x, [1.0], [0.0])
    y, _ = forward(x[:2], [1.0], [0.0])  # the spread of +-1.7e308 around 0 fits
    np.testing.assert_allclose(y.ravel(), [1.0, -1.0], rtol=1e-15)


@pytest.mark.parametrize("bwd", BACKWARDS, ids=ids)
@pytest.mark.parametrize("seed", range(3))
def test_dy_near_1e308_whose_gradients_fit(bwd, seed):
    """gamma * dy overflows on the way, though dx, dgamma and dbeta all fit float64."""
    rng = np.random.default_rng(seed)
    x = 100 * rng.standard_normal((4, 2)) + 300
    gamma, beta = np.array([100.0, -60.0]), rng.normal(size=2)
    dy = rng.uniform(0.5, 1.0, (4, 2)) * [[1, -1], [-1, 1], [1, 1], [-1, -1]]
    dy /= np.abs(dy).max()  # with B = 4, |dbeta| and |dgamma| stay below 4 max|dy|
    _, cache = forward(x, gamma, beta)
    want = backward(dy, cache)
    got = bwd(np.ldexp(dy, 1021), cache)  # max |dy| = 2.2e307, max |gamma * dy| = 2.2e309
    for g, w in zip(got, want):
        assert np.isfinite(g).all() and scaled_error(np.ldexp(g, -1021), w) <= 1e-13


@pytest.mark.parametrize("bwd", BACKWARDS, ids=ids)
def test_a_constant_dy_near_1e308_gives_dx_zero(bwd):
    """dx = 0 exactly when dy is constant per channel; gamma * inv_s * dy alone would overflow."""
    x = np.array([[1.0, 3.0], [2.0, 5.0], [4.0, 4.0], [7.0, 2.0]])
    _, cache = forward(x, [30.0, -20.0], [0.0, 1.0])
    dy = np.ldexp(np.ones((4, 2)) * [1.0, -0.5], 1021)
    dx, dgamma, dbeta = bwd(dy, cache)
    assert np.max(np.abs(dx)) <= 1e-12 * 30 * np.max(cache.inv_s) * 2.0**1021  # rounding of the cancelling terms
    np.testing.assert_allclose(dbeta, 4 * dy[0], rtol=1e-15)
    assert np.max(np.abs(dgamma)) <= 1e-13 * 2.0**1021


@pytest.mark.parametrize("bwd", BACKWARDS, ids=ids)
def test_a_gradient_beyond_float64_is_refused_naming_it(bwd):
    _, cache = forward([[1.0], [2.0]], [1.0], [0.0])
    with pytest.raises(ValueError, match=r"dbeta overflows float64"):  # sum(dy) = 2e308
        bwd(np.full((2, 1), 1e308), cache)


def test_eval_mode_dy_near_1e308():
    x, _, beta, dy = batch(4, (5, 3))
    gamma = np.array([100.0, -50.0, 30.0])  # gamma * dy overflows; gamma * dy / sqrt(running_var) fits
    _, cache = forward_eval(x, gamma, beta, np.ones(3), np.full(3, 1e6))
    dx, dgamma, _ = backward_eval(np.ldexp(dy / np.abs(dy).max(), 1020), cache)  # sum(dy) fits
    dx_ref, dgamma_ref, _ = backward_eval(dy / np.abs(dy).max(), cache)
    assert scaled_error(np.ldexp(dx, -1020), dx_ref) <= 1e-15
    assert scaled_error(np.ldexp(dgamma, -1020), dgamma_ref) <= 1e-15


def test_layer_norm_is_scale_safe_too():
    x, _, _, dy = batch(5, (3, 4, 5))
    gamma, beta = np.ones((4, 5)), np.zeros((4, 5))
    y_ref, _ = layer_norm(x, gamma, beta, eps=0.0)
    y, _ = layer_norm(np.ldexp(x, 1000), gamma, beta, eps=0.0)
    assert scaled_error(y, y_ref) <= 1e-14


# --- float16: statistics in float32, results in float16 -------------------------------------------

def test_float16_forward_of_the_issue_is_not_beta():
    x = (6 * np.random.default_rng(0).standard_normal((32, 2, 8, 8))).astype(np.float16)
    gamma, beta = np.array([1.5, -0.5], np.float16), np.array([0.25, 1.0], np.float16)
    y, cache = forward(x, gamma, beta)
    assert y.dtype == np.float16 and cache.xhat.dtype == np.float32
    y_ref, _ = forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64))
    assert np.max(np.abs(y - y_ref)) <= 2 * 2.0**-11 * np.max(np.abs(y_ref))  # one rounding to float16
    y, _ = forward(np.tile(np.arange(7, dtype=np.float16), 10000).reshape(1, 1, 70000), gamma[:1], beta[:1])
    assert np.isfinite(y).all()


@pytest.mark.parametrize("bwd", BACKWARDS, ids=ids)
def test_float16_backwards_return_float16_from_float32_sums(bwd):
    x, gamma, beta, dy = batch(6, (16, 3, 4, 4), np.float16)
    _, cache = forward(x, gamma, beta)
    grads = bwd(dy, cache)
    for got, want in zip(grads, grads64(dy, x, gamma, beta)):
        assert got.dtype == np.float16
        assert np.max(np.abs(got - want)) <= 2 * 2.0**-11 * np.max(np.abs(want)) + 1e-3 * 2.0**-11


def test_float16_backward_fast_fills_a_float16_out():
    x, gamma, beta, dy = batch(7, (8, 3), np.float16)
    _, cache = forward(x, gamma, beta)
    out = np.empty_like(x)
    dx, _, _ = backward_fast(dy, cache, out=out)
    assert dx is out and np.array_equal(out, backward(dy, cache)[0])


def test_a_float16_result_that_does_not_fit_is_refused():
    x = np.array([[0.0], [1.0]], np.float16)
    with pytest.raises(ValueError, match=r"y overflows float16"):
        forward(x, [60000.0], [60000.0])
    _, cache = forward(x, [1.0], [0.0])
    with pytest.raises(ValueError, match=r"dbeta overflows float16"):
        backward(np.full((2, 1), 60000.0, np.float16), cache)


def test_float16_eval_mode_keeps_running_stats_in_float32():
    x, gamma, beta, dy = batch(8, (6, 3), np.float16)
    rvar = np.array([1e5, 2.0, 7e4])  # beyond float16's 65504, fine in float32
    y, cache = forward_eval(x, gamma, beta, np.full(3, 3.0), rvar)
    y_ref, _ = forward_eval(*(a.astype(np.float64) for a in (x, gamma, beta)), np.full(3, 3.0), rvar)
    assert y.dtype == np.float16 and np.max(np.abs(y - y_ref)) <= 2.0**-11 * np.max(np.abs(y_ref))
    assert all(g.dtype == np.float16 for g in backward_eval(dy, cache))


# --- Finiteness is checked after the cast, naming the argument -----------------------------------

@pytest.mark.parametrize("dtype, big", [(np.float32, 1e300), (np.float16, 1e5)])
def test_values_beyond_the_dtype_of_x_are_refused_by_name(dtype, big):
    x, gamma, beta, dy = batch(9, (6, 3), dtype)
    _, cache = forward(x, gamma, beta)
    for bwd in BACKWARDS:
        with pytest.raises(ValueError, match=rf"dy holds values beyond the range of {np.dtype(dtype)}"):
            bwd(np.full(dy.shape, big), cache)
    for name in ("gamma", "beta"):
        args = {"gamma": gamma, "beta": beta, name: np.full(3, big)}
        with pytest.raises(ValueError, match=rf"{name} holds values beyond the range of {np.dtype(dtype)}"):
            forward(x, **args)


def test_eps_beyond_the_statistics_dtype_is_refused():
    x, gamma, beta, _ = batch(10, (6, 3), np.float32)
    with pytest.raises(ValueError, match=r"eps = 1e\+300 is beyond the range of float32"):
        forward(x, gamma, beta, eps=1e300)
    with pytest.raises(ValueError, match=r"eps = 1e\+300 is beyond the range of float32"):
        forward_eval(x, gamma, beta, np.zeros(3), np.ones(3), eps=1e300)


# --- eps = 0 with a subnormal variance -------------------------------------------------------------

def test_eps_zero_with_a_subnormal_variance_is_exact():
    y, _ = forward(np.array([[2.3e-162], [-2.3e-162]]), [1.0], [0.0], eps=0)
    np.testing.assert_allclose(y.ravel(), [1.0, -1.0], rtol=2**-52)


@pytest.mark.parametrize("bwd", BACKWARDS, ids=ids)
@pytest.mark.parametrize("seed", range(3))
def test_eps_zero_near_1e_160_matches_the_unscaled_batch(bwd, seed):
    x, gamma, beta, dy = batch(seed, (7, 2))
    y_ref, cache_ref = forward(x, gamma, beta, eps=0)
    y, cache = forward(np.ldexp(x, -532), gamma, beta, eps=0)  # |x| about 1e-160
    assert scaled_error(y, y_ref) <= 1e-14
    dx, _, _ = bwd(dy, cache)
    assert scaled_error(np.ldexp(dx, -532), backward(dy, cache_ref)[0]) <= 1e-13


def test_eps_zero_where_one_over_std_overflows_is_refused():
    with pytest.raises(ValueError, match=r"inv_s = 1/sqrt\(var \+ eps\) overflows float64.*use eps > 0"):
        forward(np.array([[1e-310], [-1e-310]]), [1.0], [0.0], eps=0)
    with pytest.raises(ValueError, match=r"eps = 0 with a channel of zero variance"):
        forward(np.array([[1e-310], [1e-310]]), [1.0], [0.0], eps=0)


# --- Masked arrays, eval caches, gamma copies, overlapping out -----------------------------------

def test_masked_arrays_are_refused():
    x, gamma, beta, dy = batch(11, (5, 2))
    masked = np.ma.masked_greater(x, 3.0)
    with pytest.raises(TypeError, match=r"x is a masked array, and its mask would be ignored"):
        forward(masked, gamma, beta)
    with pytest.raises(TypeError, match=r"gamma is a masked array"):
        forward(x, np.ma.masked_less(gamma, 0), beta)
    _, cache = forward(x, gamma, beta)
    for bwd in BACKWARDS:
        with pytest.raises(TypeError, match=r"dy is a masked array"):
            bwd(np.ma.masked_less(dy, 0), cache)
    with pytest.raises(TypeError, match=r"a is a masked array"):
        rel_error(masked, x)
    with pytest.raises(TypeError, match=r"value is a masked array"):
        engine.leaf(masked)


def test_backward_eval_checks_its_cache():
    x, gamma, beta, dy = batch(12, (5, 2))
    _, cache = forward(x, gamma, beta)
    with pytest.raises(ValueError, match=r"cache must be the EvalCache that forward_eval returned; got Cache \(a training"):
        backward_eval(dy, cache)
    with pytest.raises(ValueError, match=r"cache must be the EvalCache that forward_eval returned; got NoneType"):
        backward_eval(dy, None)


@pytest.mark.parametrize("bwd", BACKWARDS, ids=ids)
def test_the_cache_keeps_its_own_gamma(bwd):
    x, gamma, beta, dy = batch(13, (6, 3, 2))
    _, cache = forward(x, gamma, beta)
    want = [g.copy() for g in bwd(dy, cache)]
    gamma *= 3.0  # an optimizer step in place
    for got, w in zip(bwd(dy, cache), want):
        assert np.array_equal(got, w)


def test_normalize_forward_and_eval_keep_their_own_parameters():
    x, gamma, beta, dy = batch(14, (6, 3))
    gamma_b = gamma.reshape(1, 3)
    _, cache = normalize_forward(x, gamma_b, beta.reshape(1, 3), (0,))
    _, ecache = forward_eval(x, gamma, beta, np.zeros(3), np.ones(3))
    before = backward(dy, cache)[0].copy(), backward_eval(dy, ecache)[0].copy()
    gamma *= -2.0
    assert np.array_equal(backward(dy, cache)[0], before[0]) and np.array_equal(backward_eval(dy, ecache)[0], before[1])


@pytest.mark.parametrize("bwd", [backward_fast, backward_blocked], ids=ids)
def test_out_overlapping_dy_by_one_row_is_refused(bwd):
    x, gamma, beta, _ = batch(15, (9, 4))
    _, cache = forward(x[1:], gamma, beta)
    buf = np.random.default_rng(1).standard_normal((9, 4))
    with pytest.raises(ValueError, match=r"out overlaps dy only partly"):
        bwd(buf[1:], cache, out=buf[:-1])
    dy = buf[1:].copy()
    want = backward(dy, cache)[0]
    dx, _, _ = bwd(dy, cache, out=dy)  # exactly in place is fine
    assert dx is dy and scaled_error(dx, want) <= 1e-13


# --- The engine and the gradient checks ------------------------------------------------------------

def test_engine_reductions_refuse_out_of_range_axes():
    a = engine.leaf(np.ones((2, 3)))
    for axis in (5, -3, (0, 2)):
        with pytest.raises(np.exceptions.AxisError, match=r"axis"):
            a.sum(axis)
        with pytest.raises(ValueError, match=r"out of bounds"):
            a.mean(axis)
    np.testing.assert_array_equal(a.sum(-1).value, [3.0, 3.0])


def test_complex_input_is_refused():
    with pytest.raises(TypeError, match=r"a must hold real numbers \(float or int\); got dtype complex128"):
        rel_error(np.ones(3) + 1j, np.ones(3))
    with pytest.raises(TypeError, match=r"b must hold real numbers"):
        rel_error(np.ones(3), np.ones(3) + 1j)
    with pytest.raises(TypeError, match=r"value must hold real numbers \(float or int\); got dtype complex128"):
        engine.leaf(np.ones(2) + 1j)
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \*: 'Node' and 'complex'"):
        engine.leaf(np.ones(2)) * (1 + 2j)  # noqa: B018
    with pytest.raises(TypeError, match=r"the other operand of \* must be a Node or real numbers; got complex"):
        engine.mul(engine.leaf(np.ones(2)), 1 + 2j)


def test_rel_error_and_numerical_jacobian_refuse_empty_input():
    with pytest.raises(ValueError, match=r"rel_error needs non-empty arrays a and b"):
        rel_error(np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match=r"x must hold at least one value"):
        numerical_jacobian(lambda v: v * 2, np.ones((0, 3)))


def test_check_vjp_refuses_zero_trials_and_a_seed_for_rng():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"trials must be a positive integer; got 0"):
        check_vjp(np.sin, lambda u: u, np.ones(3), rng, trials=0)
    with pytest.raises(TypeError, match=r"rng must be a numpy Generator, like np.random.default_rng\(0\); got int"):
        vjp_directional_error(np.sin, lambda u: u, np.ones(3), rng=0)


@pytest.mark.parametrize("h, error, match", [
    (0, ValueError, r"h, the finite-difference step, must be a finite number > 0; got 0"),
    (-1e-5, ValueError, r"must be a finite number > 0"),
    (float("nan"), ValueError, r"must be a finite number > 0"),
    ("1e-5", TypeError, r"h, the finite-difference step, must be a number like 1e-5; got str"),
])
def test_numerical_gradient_refuses_a_bad_step(h, error, match):
    with pytest.raises(error, match=match):
        numerical_gradient(lambda v: float(np.sum(v**2)), np.ones(3), h=h)
    with pytest.raises(error, match=match):
        numerical_jacobian(lambda v: v**2, np.ones(3), h=h)


def test_numerical_gradient_refuses_a_vector_valued_f():
    with pytest.raises(ValueError, match=r"f must return a scalar; it returned shape \(3,\): use numerical_jacobian"):
        numerical_gradient(lambda v: v**2, np.ones(3))
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sum(v**2), np.arange(3.0)), [0, 2, 4], atol=1e-8)


def test_node_operands_must_be_nodes_or_real_numbers():
    a = engine.leaf(np.ones(3), "a")
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \+: 'Node' and 'str'"):
        a + "str"  # noqa: B018
    with pytest.raises(TypeError, match=r"the exponent p of a \*\* p must be a constant finite real number; got Node"):
        a ** a  # noqa: B018
    with pytest.raises(TypeError, match=r"the other operand of \+ must be a Node or real numbers; got str"):
        engine.add(a, "str")


def test_node_sqrt_of_a_negative_value_and_of_zero():
    with pytest.raises(ValueError, match=r"a \*\* 0.5 needs a >= 0"):
        engine.leaf([4.0, -1.0], "a").sqrt()
    root = engine.leaf([4.0, 0.0], "a").sqrt()
    np.testing.assert_array_equal(root.value, [2.0, 0.0])
    with pytest.raises(ValueError, match=r"the derivative of a \*\* 0.5 is infinite where a = 0"):
        engine.backprop(root.sum())
    with pytest.raises(ValueError, match=r"division by zero"):
        engine.leaf([1.0, 2.0]) / engine.leaf([1.0, 0.0])


def test_node_mean_with_ddof_needs_more_values_than_ddof():
    with pytest.raises(ValueError, match=r"mean over 1 value\(s\) with ddof=1 divides by count - ddof = 0"):
        engine.leaf([[3.0]]).mean(ddof=1)
    with pytest.raises(ValueError, match=r"ddof must be a non-negative integer; got np.True_"):
        engine.leaf([1.0, 2.0]).mean(ddof=np.bool_(True))


@pytest.mark.parametrize("ddof", [np.bool_(True), np.bool_(False), 1.0])
def test_ddof_must_be_an_integer_not_a_numpy_bool(ddof):
    x, gamma, beta, _ = batch(16, (5, 2))
    with pytest.raises(ValueError, match=r"ddof must be 0 \(biased variance\) or 1 \(Bessel's correction\)"):
        forward(x, gamma, beta, ddof=ddof)
