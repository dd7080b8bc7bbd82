"""Batch, layer, instance and group norm as choices of axes: gradients against autograd and finite differences."""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbackprop import forward
from bnbackprop.draw_normalizations import draw_normalization_axes, normalization_masks
from bnbackprop.gradcheck import numerical_gradient, rel_error
from bnbackprop.normalizations import (
    backward,
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    normalize,
    rms_norm,
    rms_norm_backward,
    statistic_members,
)
from bnbackprop.reference import normalize_plain

SHAPE = (3, 6, 4, 5)  # N, C, height, width: nothing square


def data(shape=SHAPE, seed=0):
    """x with non-zero means and unequal scales, and a random dy."""
    rng = np.random.default_rng(seed)
    x = 3.0 * rng.standard_normal(shape) + 2.0
    return x, rng.standard_normal(shape)


def params(pshape, seed=1):
    rng = np.random.default_rng(seed)
    return 1.0 + 0.5 * rng.standard_normal(pshape), rng.standard_normal(pshape)


def group_plain(x, gamma, beta, G, eps, ddof):
    """GroupNorm from the definition: a loop over the groups, no reshape of x."""
    N, C = x.shape[:2]
    outs = []
    for k in range(G):
        part = x[:, k * C // G:(k + 1) * C // G]
        sl = slice(k * C // G, (k + 1) * C // G)
        gb = anp.reshape(gamma[sl], (1, -1, 1, 1))
        bb = anp.reshape(beta[sl], (1, -1, 1, 1))
        outs.append(normalize_plain(part, gb, bb, (1, 2, 3), eps, ddof))
    return anp.concatenate(outs, axis=1)


# name -> (our forward, plain forward from the definition, parameter shape)
CASES = {
    "batch": (lambda x, g, b, e, d: batch_norm(x, g, b, e, d),
              lambda x, g, b, e, d: normalize_plain(x, anp.reshape(g, (1, -1, 1, 1)), anp.reshape(b, (1, -1, 1, 1)), (0, 2, 3), e, d),
              (6,)),
    "layer": (lambda x, g, b, e, d: layer_norm(x, g, b, e, d),
              lambda x, g, b, e, d: normalize_plain(x, g[None], b[None], (1, 2, 3), e, d),
              (6, 4, 5)),
    "instance": (lambda x, g, b, e, d: instance_norm(x, g, b, e, d),
                 lambda x, g, b, e, d: normalize_plain(x, anp.reshape(g, (1, -1, 1, 1)), anp.reshape(b, (1, -1, 1, 1)), (2, 3), e, d),
                 (6,)),
    "group3": (lambda x, g, b, e, d: group_norm(x, g, b, 3, e, d),
               lambda x, g, b, e, d: group_plain(x, g, b, 3, e, d),
               (6,)),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("ddof", [0, 1])
def test_forward_matches_definition_and_backward_matches_autograd(name, ddof):
    ours, plain, pshape = CASES[name]
    x, dy = data()
    gamma, beta = params(pshape)
    y, cache = ours(x, gamma, beta, 1e-5, ddof)
    np.testing.assert_allclose(y, plain(x, gamma, beta, 1e-5, ddof), rtol=1e-12, atol=1e-12)
    loss = lambda *a: anp.sum(plain(*a, 1e-5, ddof) * dy)  # noqa: E731
    want = [grad(loss, i)(x, gamma, beta) for i in range(3)]
    for g, w in zip(backward(dy, cache), want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", CASES)
def test_backward_matches_finite_differences(name):
    ours, plain, pshape = CASES[name]
    x, dy = data(shape=(2, 6, 2, 3), seed=5)
    gamma, beta = params(pshape if name != "layer" else (6, 2, 3))
    dx, dgamma, dbeta = backward(dy, ours(x, gamma, beta, 1e-3, 0)[1])
    num = numerical_gradient(lambda v: np.sum(plain(v, gamma, beta, 1e-3, 0) * dy), x)
    assert rel_error(dx, num) < 1e-6
    assert rel_error(dgamma, numerical_gradient(lambda v: np.sum(plain(x, v, beta, 1e-3, 0) * dy), gamma)) < 1e-6
    assert rel_error(dbeta, numerical_gradient(lambda v: np.sum(plain(x, gamma, v, 1e-3, 0) * dy), beta)) < 1e-6


def test_batch_norm_is_the_foundation_forward():
    x, dy = data()
    gamma, beta = params((6,))
    y, cache = batch_norm(x, gamma, beta)
    y0, cache0 = forward(x, gamma, beta)
    np.testing.assert_array_equal(y, y0)
    assert cache.core.axes == (0, 2, 3) and cache.core.B == 3 * 4 * 5


def test_group_norm_extremes_are_instance_and_layer_norm():
    x, _ = data()
    gamma, beta = params((6,))
    np.testing.assert_allclose(group_norm(x, gamma, beta, 6)[0], instance_norm(x, gamma, beta)[0], rtol=1e-13, atol=1e-13)
    ln = layer_norm(x, np.broadcast_to(gamma[:, None, None], (6, 4, 5)), np.broadcast_to(beta[:, None, None], (6, 4, 5)))
    np.testing.assert_allclose(group_norm(x, gamma, beta, 1)[0], ln[0], rtol=1e-13, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(2, 3)),
       st.data())
def test_any_axes_backward_sums_to_zero_and_matches_autograd(shape, draw):
    """For any choice of axes, dx sums to 0 over each statistic's members and matches autograd."""
    axes = tuple(sorted(draw.draw(st.sets(st.integers(0, 3), min_size=1))))
    if np.prod([shape[a] for a in axes]) < 2:
        return
    x, dy = data(shape, seed=sum(shape))
    pshape = tuple(n for a, n in enumerate(shape) if a not in axes)
    gamma, beta = params(pshape)
    dx, dgamma, dbeta = backward(dy, normalize(x, gamma, beta, axes)[1])
    np.testing.assert_allclose(dx.sum(axis=axes), 0, atol=1e-10)
    bshape = tuple(1 if a in axes else n for a, n in enumerate(shape))
    loss = lambda v: anp.sum(normalize_plain(v, gamma.reshape(bshape), beta.reshape(bshape), axes, 1e-5, 0) * dy)  # noqa: E731
    np.testing.assert_allclose(dx, grad(loss)(x), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind,index,count", [
    ("batch", (1, 2, 0, 0), 3 * 4 * 5), ("layer", (1, 2, 0, 0), 6 * 4 * 5),
    ("instance", (1, 2, 0, 0), 4 * 5), ("group", (1, 2, 0, 0), 2 * 4 * 5)])
def test_statistic_members_counts_one_statistic(kind, index, count):
    x, _ = data()
    fwd = {"batch": lambda: batch_norm(x, *params((6,))), "layer": lambda: layer_norm(x, *params((6, 4, 5))),
           "instance": lambda: instance_norm(x, *params((6,))), "group": lambda: group_norm(x, *params((6,)), 3)}
    cache = fwd[kind]()[1]
    mask = statistic_members(cache, index)
    assert mask[index] and mask.sum() == count == cache.core.B
    # Members share the mean: the mean of x over them is the cached mu at index.
    np.testing.assert_allclose(x[mask].mean(), np.broadcast_to(cache.core.mu, cache.core.x.shape).reshape(x.shape)[index])


@pytest.mark.parametrize("call,match", [
    (lambda x: normalize(x, 1.0, 0.0, axes=(0, 4)), "out of range"),
    (lambda x: normalize(x, 1.0, 0.0, axes=(1, -3)), "twice"),
    (lambda x: normalize(x, 1.0, 0.0, axes="0"), "tuple of ints"),
    (lambda x: normalize(x, 1.0, 0.0, axes=()), "at least one axis"),
    (lambda x: normalize(x[:1, :, :1, :1], np.ones(6), np.zeros(6), axes=(0, 2, 3)), "more than 1 value"),
    (lambda x: group_norm(x, np.ones(6), np.zeros(6), 4), "does not divide"),
    (lambda x: group_norm(x, np.ones(6), np.zeros(6), 0), "positive integer"),
    (lambda x: group_norm(x, np.ones(3), np.zeros(6), 3), r"expected \(6,\)"),
    (lambda x: layer_norm(x, np.ones(6), np.zeros(6)), r"expected \(6, 4, 5\)"),
    (lambda x: instance_norm(x[:, :, 0, 0], np.ones(6), np.zeros(6)), "at least 3 dimensions"),
    (lambda x: backward(np.ones((2, 2)), batch_norm(x, np.ones(6), np.zeros(6))[1]), "dy has shape"),
    (lambda x: backward(np.ones(SHAPE), forward(x, np.ones(6), np.zeros(6))[1]), "NormCache"),
    (lambda x: statistic_members(batch_norm(x, np.ones(6), np.zeros(6))[1], (0, 0)), "one entry per axis"),
    (lambda x: statistic_members(batch_norm(x, np.ones(6), np.zeros(6))[1], (0, 6, 0, 0)), "a position in x"),
])
def test_bad_input_gets_a_clear_value_error(call, match):
    x, _ = data()
    with pytest.raises(ValueError, match=match):
        call(x)


def test_figure_masks_come_from_the_caches():
    masks = normalization_masks(shape=(3, 6, 2, 5), groups=2, index=(1, 4, 0, 0))
    counts = {k: int(m.sum()) for k, m in masks.items()}
    assert counts == {"Batch Norm": 30, "Layer Norm": 60, "Instance Norm": 10, "Group Norm (G=2)": 30}
    gn = masks["Group Norm (G=2)"]
    assert gn[1, 3:].all() and not gn[1, :3].any() and not gn[[0, 2]].any()
    with pytest.raises(ValueError, match=r"4-D, \(N, C, height, width\)"):
        normalization_masks(shape=(3, 6, 10))


def test_figure_draws_four_boxes():
    import matplotlib

    matplotlib.use("Agg")
    fig = draw_normalization_axes()
    assert len(fig.axes) == 4 and "16 values per statistic" in fig.axes[0].get_title()


# RMSNorm: the same checks as the other normalizations, plus what changes without the centering.

def rms_plain(x, gamma, eps):
    """RMSNorm from the definition, in autograd.numpy."""
    return gamma * x / anp.sqrt(anp.mean(x * x, axis=-1, keepdims=True) + eps)


RMS_SHAPES = [(2, 5), (7, 3), (3, 4, 6), (2, 3, 2, 5)]


def rms_data(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 10) * rng.standard_normal(shape) + rng.normal(size=shape[-1])  # non-zero means
    gamma = rng.uniform(0.5, 2.0, shape[-1]) * rng.choice([-1.0, 1.0], shape[-1])
    return x, gamma, rng.standard_normal(shape)


@pytest.mark.parametrize("shape", RMS_SHAPES)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.3])
def test_rms_norm_forward_and_backward_match_definition_autograd_and_differences(shape, eps):
    for seed in range(5):
        x, gamma, dy = rms_data(shape, seed)
        y, cache = rms_norm(x, gamma, eps)
        np.testing.assert_allclose(y, rms_plain(x, gamma, eps), rtol=1e-13, atol=1e-13)
        dx, dgamma = rms_norm_backward(dy, cache)
        loss = lambda x_, g_: anp.sum(rms_plain(x_, g_, eps) * dy)  # noqa: E731
        assert rel_error(dx, grad(loss, 0)(x, gamma)) < 1e-11
        assert rel_error(dgamma, grad(loss, 1)(x, gamma)) < 1e-11
        assert rel_error(dx, numerical_gradient(lambda v: loss(v, gamma), x)) < 1e-6


@pytest.mark.parametrize("shape", RMS_SHAPES)
def test_rms_norm_gradient_is_orthogonal_to_xhat_only_at_eps_0_and_does_not_sum_to_zero(shape):
    for seed in range(5):
        x, gamma, dy = rms_data(shape, seed)
        for eps in (0.0, 1e-3, 2.0):
            _, c = rms_norm(x, gamma, eps)
            dx = rms_norm_backward(dy, c)[0]
            g = gamma * dy
            # sum(dx * xhat) = sum(g * xhat) / s * eps / (mean(x^2) + eps): zero exactly when eps = 0
            ms = (x * x).mean(axis=-1, keepdims=True)
            want = (g * c.xhat).sum(axis=-1, keepdims=True) * c.inv_s * eps / (ms + eps)
            scale = np.abs(g * c.inv_s).sum(axis=-1, keepdims=True)
            got = (dx * c.xhat).sum(axis=-1, keepdims=True)
            assert np.all(np.abs(got - want) <= 1e-9 * np.abs(want) + 1e-12 * scale)
            # No centering: unlike batch and layer norm, dx does not sum to zero over the row.
            assert np.max(np.abs(dx.sum(axis=-1)) / scale[..., 0]) > 1e-3


def test_rms_norm_scaling_the_input_is_scaling_eps():
    for seed, shape in enumerate(RMS_SHAPES):
        x, gamma, dy = rms_data(shape, seed)
        for a in (1e-3, 0.5, 7.0, 1e3):
            for eps in (0.0, 1e-5, 0.1):
                ya, ca = rms_norm(a * x, gamma, eps)
                y1, c1 = rms_norm(x, gamma, eps / a**2)
                np.testing.assert_allclose(ya, y1, rtol=1e-12, atol=1e-13)
                np.testing.assert_allclose(rms_norm_backward(dy, ca)[0], rms_norm_backward(dy, c1)[0] / a, rtol=1e-10)


def test_rms_norm_of_a_centered_row_is_layer_norm():
    rng = np.random.default_rng(9)
    x, dy = 3 * rng.standard_normal((6, 8)) + 2, rng.standard_normal((6, 8))
    gamma = rng.uniform(0.5, 2, 8)
    xc = x - x.mean(axis=1, keepdims=True)
    y_rms, c_rms = rms_norm(xc, gamma, 1e-5)
    y_ln, c_ln = layer_norm(x, gamma, np.zeros(8), 1e-5)
    np.testing.assert_allclose(y_rms, y_ln, rtol=1e-12, atol=1e-13)
    # The gradients differ: layer norm's also flows through the mean; centering rms_norm's dx gives it.
    dx_rms = rms_norm_backward(dy, c_rms)[0]
    np.testing.assert_allclose(dx_rms - dx_rms.mean(axis=1, keepdims=True), backward(dy, c_ln)[0], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("call, match", [
    (lambda: rms_norm(np.ones((3, 4)), np.ones(3)), "gamma has shape"),
    (lambda: rms_norm(np.ones(4), np.ones(4)), "x has shape"),
    (lambda: rms_norm(np.zeros((2, 4)), np.ones(4), eps=0.0), "mean square is 0"),
    (lambda: rms_norm(np.ones((2, 4)), np.ones(4), eps=-1.0), "eps must be"),
    (lambda: rms_norm_backward(np.ones((2, 3)), rms_norm(np.ones((2, 4)), np.ones(4))[1]), "dy has shape"),
    (lambda: rms_norm_backward(np.ones((2, 4)), None), "RMSCache"),
])
def test_rms_norm_bad_input_gets_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
