"""A small reverse-mode autodiff engine over numpy arrays, built to be looked at.

Each op is a function that makes a node and one `Edge` per use of an operand: `a * a` has two
edges from `a`. An edge holds its local vector-Jacobian product as a small closure. The backward
pass, `backprop`, collects every edge's contribution at its source node and adds them in one named step,
`fan_in_sum`, which is where the chain rule's sum over paths lives.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ._validate import count_over


@dataclass(eq=False)
class Edge:
    """One use of `src` by `dst`, with its vector-Jacobian product and a label for its local derivative."""

    src: Node
    dst: Node
    vjp: Callable[[np.ndarray], np.ndarray]
    local: str

    def jacobian(self) -> np.ndarray:
        """Dense local Jacobian d dst / d src, shape (dst.size, src.size), pulled back row by row."""
        rows = []
        for i in range(self.dst.value.size):
            e_i = np.zeros(self.dst.value.size)
            e_i[i] = 1.0
            pulled = unbroadcast(self.vjp(e_i.reshape(self.dst.shape)), self.src.shape)
            rows.append(pulled.ravel())
        return np.array(rows)

    def __repr__(self) -> str:
        return f"Edge({self.src.name} -> {self.dst.name}, local={self.local})"


@dataclass(eq=False)
class Node:
    """A value in the graph, with the edges from the operands it was computed from."""

    value: np.ndarray
    name: str = ""
    op: str = "input"
    edges: list[Edge] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the value."""
        return self.value.shape

    def named(self, name: str) -> Node:
        """Give the node a name from the name table; returns the node."""
        self.name = name
        return self

    def __repr__(self) -> str:
        return f"Node({self.name or self.op}, shape={self.shape})"

    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(self, other)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return add(neg(self), other)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(self, other)

    def __truediv__(self, other):
        return div(self, other)

    def __neg__(self):
        return neg(self)

    def __pow__(self, p):
        return power(self, p)

    def sum(self, axis=None, keepdims=False):
        """Sum over `axis`."""
        return reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False, ddof=0):
        """Sum over `axis` divided by (count - ddof)."""
        return reduce_mean(self, axis, keepdims, ddof)

    def sqrt(self):
        """Elementwise square root."""
        return power(self, 0.5)


def leaf(value, name: str = "") -> Node:
    """An input node."""
    return Node(np.asarray(value, dtype=float), name=name)


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient over the axes that broadcasting added or stretched: the one place this happens."""
    grad = np.asarray(grad)
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    stretched = tuple(a for a, n in enumerate(shape) if n == 1 and grad.shape[a] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def _make(op: str, value, uses) -> Node:
    """Create a node and one edge per (operand, vjp, local label) use."""
    node = Node(np.asarray(value, dtype=float), op=op)
    node.edges = [Edge(src, node, vjp, local) for src, vjp, local in uses]
    return node


def _label(node: Node) -> str:
    return node.name or node.op


def add(a: Node, b) -> Node:
    """a + b; a constant b is folded into the op."""
    if not isinstance(b, Node):
        return _make(f"+ {b:g}" if np.isscalar(b) else "+ c", a.value + b, [(a, lambda g: g, "1")])
    return _make("+", a.value + b.value, [(a, lambda g: g, "1"), (b, lambda g: g, "1")])


def sub(a: Node, b) -> Node:
    """a - b."""
    if not isinstance(b, Node):
        return add(a, -b)
    return _make("-", a.value - b.value, [(a, lambda g: g, "1"), (b, lambda g: -g, "-1")])


def neg(a: Node) -> Node:
    """-a."""
    return _make("neg", -a.value, [(a, lambda g: -g, "-1")])


def mul(a: Node, b) -> Node:
    """a * b; each operand's local derivative is the other operand."""
    if not isinstance(b, Node):
        c, text = np.asarray(b, dtype=float), (f"{b:g}" if np.isscalar(b) else "c")
        return _make(f"* {text}", a.value * c, [(a, lambda g: g * c, text)])
    av, bv = a.value, b.value
    return _make("*", av * bv, [(a, lambda g: g * bv, _label(b)), (b, lambda g: g * av, _label(a))])


def div(a: Node, b) -> Node:
    """a / b."""
    if not isinstance(b, Node):
        return mul(a, 1.0 / np.asarray(b, dtype=float))
    av, bv = a.value, b.value
    uses = [(a, lambda g: g / bv, f"1/{_label(b)}"), (b, lambda g: -g * av / bv**2, f"-{_label(a)}/{_label(b)}^2")]
    return _make("/", av / bv, uses)


def power(a: Node, p: float) -> Node:
    """a ** p for a constant exponent p."""
    av = a.value
    return _make(f"**{p:g}", av**p, [(a, lambda g: g * p * av ** (p - 1), f"{p:g} {_label(a)}^{p - 1:g}")])


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in np.atleast_1d(axis))


def _expand(g, shape, axes, keepdims):
    """Broadcast a reduced gradient back over the reduced axes."""
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


def reduce_sum(a: Node, axis=None, keepdims=False) -> Node:
    """Sum over axes; the local derivative is 1 for every summed entry."""
    axes, shape = _axes(axis, a.value.ndim), a.shape
    value = a.value.sum(axis=axes, keepdims=keepdims)
    return _make("sum", value, [(a, lambda g: _expand(g, shape, axes, keepdims), "1")])


def reduce_mean(a: Node, axis=None, keepdims=False, ddof=0) -> Node:
    """Sum over axes divided by (count - ddof); the local derivative is 1/(count - ddof)."""
    axes, shape = _axes(axis, a.value.ndim), a.shape
    n = count_over(shape, axes) - ddof
    value = a.value.sum(axis=axes, keepdims=keepdims) / n
    return _make("mean", value, [(a, lambda g: _expand(g, shape, axes, keepdims) / n, f"1/{n}")])


def topological_order(out: Node) -> list[Node]:
    """Nodes that `out` depends on, each after all of its operands."""
    order, seen, stack = [], set(), [(out, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((e.src, False) for e in node.edges if id(e.src) not in seen)
    return order


def all_edges(out: Node) -> list[Edge]:
    """Every edge in the graph of `out`, in topological order of their destinations."""
    return [e for node in topological_order(out) for e in node.edges]


def fan_in_sum(contributions: list[np.ndarray]) -> np.ndarray:
    """The multivariable chain rule at a node used more than once: add what each use sends back."""
    total = np.zeros_like(contributions[0])
    for c in contributions:
        total += c
    return total


class Gradients:
    """Fresh gradients from one backward pass, plus what each edge contributed."""

    def __init__(self, grads: dict, contributions: dict, nodes: list[Node]):
        self._grads, self._contrib = grads, contributions
        self._by_name = {n.name: n for n in nodes if n.name}

    def _node(self, key) -> Node:
        return self._by_name[key] if isinstance(key, str) else key

    def __getitem__(self, key) -> np.ndarray:
        return self._grads[id(self._node(key))]

    def contributions(self, key) -> list[tuple[Edge, np.ndarray]]:
        """(edge, array) pairs that the fan-in sum at this node adds up."""
        return self._contrib[id(self._node(key))]


def backprop(out: Node, seed=None) -> Gradients:
    """Reverse-mode pass from `out`; the seed defaults to ones. Nothing accumulates across calls."""
    order = topological_order(out)
    seed = np.ones_like(out.value) if seed is None else np.asarray(seed, dtype=float)
    if seed.shape != out.shape:
        raise ValueError(f"seed has shape {seed.shape}; expected {out.shape}, the shape of the output node")
    if not np.all(np.isfinite(seed)):
        raise ValueError("seed must be finite; it holds NaN or infinite values")
    grads, contributions = {id(out): seed}, defaultdict(list)
    for node in reversed(order):
        if node is not out:
            grads[id(node)] = fan_in_sum([c for _, c in contributions[id(node)]])
        for edge in node.edges:
            pulled = unbroadcast(edge.vjp(grads[id(node)]), edge.src.shape)
            contributions[id(edge.src)].append((edge, pulled))
    return Gradients(grads, dict(contributions), order)


def paths(src: Node, dst: Node) -> list[tuple[Edge, ...]]:
    """Every path of edges from `src` to `dst`, each listed from `src` onward."""
    if src is dst:
        return [()]
    found = []
    for edge in dst.edges:
        found += [p + (edge,) for p in paths(src, edge.src)]
    return found


def path_jacobian(path: tuple[Edge, ...]) -> np.ndarray:
    """Product of the local Jacobians along a path: what this path alone contributes to d dst / d src."""
    J = np.eye(path[0].src.value.size)
    for edge in path:
        J = edge.jacobian() @ J
    return J


__all__ = [
    "Edge",
    "Gradients",
    "Node",
    "add",
    "all_edges",
    "backprop",
    "div",
    "fan_in_sum",
    "leaf",
    "mul",
    "neg",
    "path_jacobian",
    "paths",
    "power",
    "reduce_mean",
    "reduce_sum",
    "sub",
    "topological_order",
    "unbroadcast",
]
