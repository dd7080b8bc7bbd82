"""The engine: one edge per use, a named fan-in sum, fresh gradients, path listing."""

from __future__ import annotations

import numpy as np
import pytest

from bnbackprop import engine
from bnbackprop.gradcheck import check_vjp, numerical_gradient

RNG = np.random.default_rng(21)
A = RNG.normal(size=(3, 4)) + 2.0
W = RNG.normal(size=(1, 4))


def test_a_times_a_has_two_edges_and_gradient_2a():
    a = engine.leaf(A, "a")
    out = a * a
    assert [e.src for e in out.edges] == [a, a]
    grads = engine.backprop(out.sum())
    assert len(grads.contributions("a")) == 2
    np.testing.assert_allclose(grads["a"], 2 * A)


def test_fan_in_adds_every_use():
    x, w = engine.leaf(A, "x"), engine.leaf(W, "w")
    out = (x * w + x).named("out")
    grads = engine.backprop(out.sum())
    parts = grads.contributions("x")
    assert [e.dst.op for e, _ in parts] == ["+", "*"] or [e.dst.op for e, _ in parts] == ["*", "+"]
    np.testing.assert_allclose(engine.fan_in_sum([c for _, c in parts]), grads["x"])
    np.testing.assert_allclose(grads["x"], np.broadcast_to(W + 1, A.shape))
    np.testing.assert_allclose(grads["w"], A.sum(axis=0, keepdims=True))  # unbroadcast over axis 0


def test_backward_is_fresh_on_every_call():
    x = engine.leaf(A, "x")
    out = (x * x * 3.0).sum()
    first, second = engine.backprop(out)["x"], engine.backprop(out)["x"]
    np.testing.assert_allclose(first, 6 * A)
    np.testing.assert_allclose(second, first)
    assert first is not second


OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**3 * b,
    "sqrt": lambda a, b: (a * a).sqrt() + b,
    "neg_rsub": lambda a, b: 2.0 - a * b,
    "sum_axis": lambda a, b: (a * b).sum(axis=0, keepdims=True) * a,
    "mean_ddof": lambda a, b: (a * b).mean(axis=1) .sum() + a.mean(axis=(0, 1), keepdims=False, ddof=1) * b,
}


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_matches_finite_differences(name):
    op = OPS[name]
    def value(v):
        return op(engine.leaf(v, "a"), engine.leaf(W, "b")).value
    u = np.random.default_rng(3).normal(size=value(A).shape)
    def vjp(seed):
        a = engine.leaf(A, "a")
        return engine.backprop(op(a, engine.leaf(W, "b")), seed=seed)[a]
    check_vjp(value, vjp, A, np.random.default_rng(4), tol=1e-7)
    grad = numerical_gradient(lambda v: float(np.sum(value(v) * u)), A)
    np.testing.assert_allclose(vjp(u), grad, rtol=1e-6, atol=1e-8)


def test_unbroadcast_sums_added_and_stretched_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(engine.unbroadcast(g, (3, 1)), g.sum(axis=(0, 2)).reshape(3, 1))
    np.testing.assert_allclose(engine.unbroadcast(g, (1, 3, 4)), g.sum(axis=0, keepdims=True))
    np.testing.assert_allclose(engine.unbroadcast(g, (2, 3, 4)), g)


def test_paths_list_every_route_with_local_derivatives():
    x = engine.leaf(np.array([[1.0], [2.0], [4.0]]), "x")
    mu = x.mean(0, keepdims=True).named("mu")
    xmu = (x - mu).named("xmu")
    found = engine.paths(x, xmu)
    assert sorted(tuple(e.local for e in p) for p in found) == [("1",), ("1/3", "-1")]
    total = sum(engine.path_jacobian(p) for p in found)
    np.testing.assert_allclose(total, np.eye(3) - 1 / 3)
    assert engine.paths(xmu, x) == []


def test_edge_jacobian_matches_finite_differences():
    x = engine.leaf(A, "x")
    out = (x * x).sqrt()
    for edge in out.edges[0].src.edges:
        num = np.stack([numerical_gradient(lambda v: float((v * A).ravel()[i]), A).ravel() for i in range(A.size)])
        np.testing.assert_allclose(edge.jacobian(), num, rtol=1e-7, atol=1e-9)


def test_topological_order_puts_operands_first():
    x = engine.leaf(A, "x")
    y = (x * 2.0 + x).named("y")
    order = engine.topological_order(y)
    assert order[-1] is y and order.index(x) < order.index(y.edges[0].src)
