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
from numpy.lib.array_utils import normalize_axis_tuple

from ._validate import count_over, real_array


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

    # An operand that is neither a Node nor real numbers gives NotImplemented, so Python raises its TypeError.
    def __add__(self, other):
        return add(self, other) if _is_operand(other) else NotImplemented

    def __radd__(self, other):
        return add(self, other) if _is_operand(other) else NotImplemented

    def __sub__(self, other):
        return sub(self, other) if _is_operand(other) else NotImplemented

    def __rsub__(self, other):
        return add(neg(self), other) if _is_operand(other) else NotImplemented

    def __mul__(self, other):
        return mul(self, other) if _is_operand(other) else NotImplemented

    def __rmul__(self, other):
        return mul(self, other) if _is_operand(other) else NotImplemented

    def __truediv__(self, other):
        return div(self, other) if _is_operand(other) else NotImplemented

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


def _is_operand(other) -> bool:
    """A Node, or a constant of real numbers."""
    if isinstance(other, Node):
        return True
    return not isinstance(other, (str, bytes, np.ma.MaskedArray)) and np.asarray(other).dtype.kind in "iuf"


def _constant(b, op: str) -> np.ndarray:
    """The constant operand of `op`, as real numbers."""
    if not _is_operand(b):
        raise TypeError(f"the other operand of {op} must be a Node or real numbers; got {type(b).__name__}")
    return real_array(b, f"the constant operand of {op}")


def leaf(value, name: str = "") -> Node:
    """An input node; value must hold real numbers."""
    return Node(real_array(value, "value"), name=name)


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
        c = _constant(b, "+")
        return _make(f"+ {float(c):g}" if c.ndim == 0 else "+ c", a.value + c, [(a, lambda g: g, "1")])
    return _make("+", a.value + b.value, [(a, lambda g: g, "1"), (b, lambda g: g, "1")])


def sub(a: Node, b) -> Node:
    """a - b."""
    if not isinstance(b, Node):
        return add(a, -_constant(b, "-"))
    return _make("-", a.value - b.value, [(a, lambda g: g, "1"), (b, lambda g: -g, "-1")])


def neg(a: Node) -> Node:
    """-a."""
    return _make("neg", -a.value, [(a, lambda g: -g, "-1")])


def mul(a: Node, b) -> Node:
    """a * b; each operand's local derivative is the other operand."""
    if not isinstance(b, Node):
        c = _constant(b, "*")
        text = f"{float(c):g}" if c.ndim == 0 else "c"
        return _make(f"* {text}", a.value * c, [(a, lambda g: g * c, text)])
    av, bv = a.value, b.value
    return _make("*", av * bv, [(a, lambda g: g * bv, _label(b)), (b, lambda g: g * av, _label(a))])


def div(a: Node, b) -> Node:
    """a / b."""
    if not isinstance(b, Node):
        c = _constant(b, "/")
        _refuse_zero_divisor(c)
        return mul(a, 1.0 / c)
    av, bv = a.value, b.value
    _refuse_zero_divisor(bv)
    uses = [(a, lambda g: g / bv, f"1/{_label(b)}"), (b, lambda g: -g * av / bv**2, f"-{_label(a)}/{_label(b)}^2")]
    return _make("/", av / bv, uses)


def _refuse_zero_divisor(bv):
    """Division by zero gives inf, and its gradient inf or NaN."""
    if np.any(bv == 0):
        raise ValueError("division by zero: the divisor holds zeros")


def power(a: Node, p: float) -> Node:
    """a ** p for a constant real exponent p; a must be >= 0 unless p is an integer, and > 0 if p < 0."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)) or not np.isfinite(p):
        raise TypeError(f"the exponent p of a ** p must be a constant finite real number; got {type(p).__name__}")
    av, whole = a.value, float(p).is_integer()
    if not whole and np.any(av < 0):
        raise ValueError(f"{_label(a)} ** {p:g} needs {_label(a)} >= 0 (a real power of a negative number is not real); "
                         f"its smallest value is {av.min():g}")
    if p < 0 and np.any(av == 0):
        raise ValueError(f"{_label(a)} ** {p:g} divides by zero: {_label(a)} holds zeros")

    def vjp(g):
        if p < 1 and not whole and np.any(av == 0):
            raise ValueError(f"the derivative of {_label(a)} ** {p:g} is infinite where {_label(a)} = 0")
        return g * p * av ** (p - 1)

    return _make(f"**{p:g}", av**p, [(a, vjp, f"{p:g} {_label(a)}^{p - 1:g}")])


def _axes(axis, ndim: int) -> tuple[int, ...]:
    """axis as a tuple of non-negative ints; numpy's AxisError (a ValueError) if out of range."""
    if axis is None:
        return tuple(range(ndim))
    return normalize_axis_tuple(axis, ndim, "axis")


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
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative integer; got {ddof!r}")
    count = count_over(shape, axes)
    if count - ddof < 1:
        raise ValueError(f"mean over {count} value(s) with ddof={ddof} divides by count - ddof = {count - ddof}; "
                         "need more values than ddof")
    n = count - ddof
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
