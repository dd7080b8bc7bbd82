"""Batch norm built from the engine's elementary ops, with node names from the name table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine
from ._validate import check_dy
from .batchnorm import check_training_args, refuse_zero_variance


@dataclass
class BNGraph:
    """The nodes of one batch norm forward, by name."""

    nodes: dict[str, engine.Node]

    def __getitem__(self, name: str) -> engine.Node:
        return self.nodes[name]

    @property
    def y(self) -> engine.Node:
        """The output node."""
        return self.nodes["y"]

    def triangle(self) -> list[engine.Edge]:
        """The three edges of the 'triangle of death': x -> mu, mu -> xmu and x -> xmu."""
        x, mu, xmu = self["x"], self["mu"], self["xmu"]
        return [e for e in engine.all_edges(self.y) if (e.src, e.dst) in ((x, mu), (mu, xmu), (x, xmu))]

    def backward(self, dy) -> engine.Gradients:
        """Run the engine's backward pass from y with upstream gradient dy."""
        return engine.backprop(self.y, seed=dy)


def batchnorm_graph(x, gamma, beta, eps=1e-5, ddof=0) -> BNGraph:
    """Build training-mode batch norm node by node; the same checks as `bnbackprop.forward` apply."""
    x, gamma, beta, axes, eps, ddof = check_training_args(x, gamma, beta, eps, ddof)
    n = {"x": engine.leaf(x, "x"), "gamma": engine.leaf(gamma, "gamma"), "beta": engine.leaf(beta, "beta")}
    n["mu"] = n["x"].mean(axes, keepdims=True).named("mu")
    n["xmu"] = (n["x"] - n["mu"]).named("xmu")
    n["xmusq"] = (n["xmu"] ** 2).named("xmusq")
    n["var"] = n["xmusq"].mean(axes, keepdims=True, ddof=ddof).named("var")
    if eps == 0:
        refuse_zero_variance(np.abs(x).max(axis=axes, keepdims=True), n["var"].value)
    n["vareps"] = (n["var"] + eps).named("vareps")
    n["s"] = n["vareps"].sqrt().named("s")
    n["inv_s"] = (n["s"] ** -1).named("inv_s")
    n["xhat"] = (n["xmu"] * n["inv_s"]).named("xhat")
    n["gxhat"] = (n["gamma"] * n["xhat"]).named("gxhat")
    n["y"] = (n["gxhat"] + n["beta"]).named("y")
    return BNGraph(n)


def engine_backward(dy, x, gamma, beta, eps=1e-5, ddof=0):
    """(dx, dgamma, dbeta) from the engine: a third, independent route to the same gradients."""
    graph = batchnorm_graph(x, gamma, beta, eps, ddof)
    grads = graph.backward(check_dy(dy, graph.y.shape, np.float64))
    return grads["x"], grads["gamma"].ravel(), grads["beta"].ravel()


__all__ = ["BNGraph", "batchnorm_graph", "engine_backward"]
