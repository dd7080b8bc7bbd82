"""The gradient of the gradient: batch norm's double backward, and a gradient penalty through the book's MLP.

The first backward is a function of (x, gamma, dy) with outputs (dx, dgamma, dbeta). Given the
gradients `ddx`, `ddgamma`, `ddbeta` arriving at those outputs, the double backward returns the
gradients with respect to its inputs: `dx2` (for x), `dgamma2` (for gamma) and `ddy` (for dy).
It is written as the first backward's lines, then those lines in reverse, with the same names.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_float_array, check_dy, check_eps, check_finite
from . import engine
from .batchnorm import Cache, backward, forward
from .bngraph import batchnorm_graph
from .mlp import _check_batch, _softmax_xent, n_layers, uses_bn


def _check_optional(a, name, shape, dtype):
    """An upstream gradient of the given shape; None stands for zeros, as an undefined gradient does in PyTorch."""
    if a is None:
        return np.zeros(shape, dtype=dtype)
    arr = as_float_array(a, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}; expected {tuple(shape)}")
    check_finite(arr, name)
    return arr.astype(dtype, copy=False)


class _Projection:
    """The first backward's map v -> v - mean(v) - xhat * sum(v*xhat)/(B - ddof), and the sums it takes."""

    def __init__(self, cache):
        self.xhat, self.axes, self.B, self.dof = cache.xhat, cache.axes, cache.B, cache.B - cache.ddof

    def total(self, a):
        """Sum over the batch (every axis the statistics reduce over), kept broadcastable."""
        return a.sum(axis=self.axes, keepdims=True)

    def __call__(self, v):
        """Project v: symmetric, so it is its own transpose (a projection exactly when eps = 0)."""
        return v - self.total(v) / self.B - self.xhat * (self.total(v * self.xhat) / self.dof)


def _check_args(ddx, ddgamma, ddbeta, dy, cache):
    """The checked upstream gradients (None is zero), ddgamma and ddbeta broadcast like cache.gamma."""
    if not isinstance(cache, Cache):
        raise ValueError(f"cache must be the Cache that bnbackprop.batchnorm.forward returned; got {type(cache).__name__}")
    xhat = cache.xhat
    pshape = tuple(n for a, n in enumerate(cache.gamma.shape) if a not in cache.param_axes)
    dy = check_dy(dy, xhat.shape, xhat.dtype)
    ddx = _check_optional(ddx, "ddx", xhat.shape, xhat.dtype)
    ddgamma_b = _check_optional(ddgamma, "ddgamma", pshape, xhat.dtype).reshape(cache.gamma.shape)
    ddbeta_b = _check_optional(ddbeta, "ddbeta", pshape, xhat.dtype).reshape(cache.gamma.shape)
    return ddx, ddgamma_b, ddbeta_b, dy, pshape


def dx2_paths(ddx, ddgamma, dy, cache):
    """The four parts of dx2, one per path from x into the backward's outputs; they sum to dx2."""
    ddx, ddgamma_b, _, dy, _ = _check_args(ddx, ddgamma, None, dy, cache)
    project, xhat, inv_s = _Projection(cache), cache.xhat, cache.inv_s
    dof = project.dof  # the variance divides by B - ddof
    # The first backward, line by line (only the intermediates the reverse needs).
    g = cache.gamma * dy
    sum_gxhat = project.total(g * xhat)
    # dx = project(g) * inv_s, where project uses xhat twice: directly, and through sum_gxhat.
    # Reverse: dxhat collects both uses (a triangle one level up), then xhat's own backward takes it to x.
    dxhat_direct = -ddx * (sum_gxhat / dof) * inv_s
    dxhat_through_sum = -g * (project.total(ddx * xhat) / dof) * inv_s
    dxhat_dgamma = ddgamma_b * dy  # dgamma = sum(dy * xhat)
    # dx also depends on x through inv_s = 1/s, with s**2 = var + eps: ds/dx = xhat/(B - ddof).
    ds = -project.total(ddx * project(g)) * inv_s**2
    return {
        "xhat, directly": project(dxhat_direct) * inv_s,
        "xhat, through sum_gxhat": project(dxhat_through_sum) * inv_s,
        "s": ds * xhat / dof,
        "dgamma": project(dxhat_dgamma) * inv_s,
    }


def double_backward(ddx, ddgamma, ddbeta, dy, cache):
    """Gradients (dx2, dgamma2, ddy) of L2 = sum(ddx*dx) + sum(ddgamma*dgamma) + sum(ddbeta*dbeta) w.r.t. x, gamma, dy."""
    ddx, ddgamma_b, ddbeta_b, dy, pshape = _check_args(ddx, ddgamma, ddbeta, dy, cache)
    project = _Projection(cache)
    # dx = project(gamma * dy) * inv_s is linear in dy, and project is its own transpose.
    dg = project(ddx) * cache.inv_s
    # dbeta = sum(dy) and dgamma = sum(dy * xhat) send ddbeta and ddgamma * xhat to dy.
    ddy = cache.gamma * dg + ddgamma_b * cache.xhat + ddbeta_b
    dgamma2 = (dg * dy).sum(axis=cache.param_axes).reshape(pshape)
    dx2 = sum(dx2_paths(ddx, ddgamma_b.reshape(pshape), dy, cache).values())
    return dx2, dgamma2, ddy


def backward_graph(x, gamma, beta, dy, eps=1e-5, ddof=0):
    """The first backward built from the engine's ops on top of the forward graph: a dict of named nodes, dx included."""
    n = dict(batchnorm_graph(x, gamma, beta, eps, ddof).nodes)
    axes = tuple(a for a in range(n["x"].value.ndim) if a != 1)
    B, dof = n["x"].value.size // n["x"].value.shape[1], n["x"].value.size // n["x"].value.shape[1] - ddof
    n["dy"] = engine.leaf(check_dy(dy, n["x"].shape, np.float64), "dy")
    n["g"] = (n["gamma"] * n["dy"]).named("g")
    n["sum_g"] = n["g"].sum(axes, keepdims=True).named("sum_g")
    n["sum_gxhat"] = (n["g"] * n["xhat"]).sum(axes, keepdims=True).named("sum_gxhat")
    n["dx"] = ((n["g"] - n["sum_g"] / B - n["xhat"] * (n["sum_gxhat"] / dof)) * n["inv_s"]).named("dx")
    n["dgamma"] = (n["dy"] * n["xhat"]).sum(axes, keepdims=True).named("dgamma")
    n["dbeta"] = n["dy"].sum(axes, keepdims=True).named("dbeta")
    return n


def triangle_one_level_up(nodes):
    """The edges of every path from xhat to the product xhat * sum_gxhat/(B - ddof) in a backward_graph."""
    xhat, sum_gxhat = nodes["xhat"], nodes["sum_gxhat"]
    uses = [e.dst for e in engine.all_edges(nodes["dx"]) if e.src is xhat]
    (product,) = [d for d in uses if engine.paths(sum_gxhat, d)]
    return [e for path in engine.paths(xhat, product) for e in path]


def engine_double_backward(ddx, ddgamma, ddbeta, dy, x, gamma, beta, eps=1e-5, ddof=0):
    """(dx2, dgamma2, ddy) from the engine's ordinary backward run on the graph of the first backward."""
    n = backward_graph(x, gamma, beta, dy, eps, ddof)
    shape = n["dgamma"].shape
    L2 = ((n["dx"] * np.asarray(ddx, dtype=float)).sum() + (n["dgamma"] * np.reshape(ddgamma, shape)).sum()
          + (n["dbeta"] * np.reshape(ddbeta, shape)).sum()).named("L2")
    grads = engine.backprop(L2)
    return grads["x"], grads["gamma"].ravel(), grads["dy"]


def natural_sizes(gamma, dy, ddx, ddgamma, ddbeta, cache):
    """The order of (dx2, dgamma2, ddy) for generic inputs, a floor for relative errors (at B = 2, eps = 0, dx2 is 0)."""
    iv = float(np.max(cache.inv_s))
    g, d, u = (float(np.max(np.abs(a))) for a in (gamma, dy, ddx))
    upstream = float(np.max(np.abs(ddgamma), initial=0.0) + np.max(np.abs(ddbeta), initial=0.0))
    return g * d * u * iv**2, d * u * iv * cache.B, g * u * iv + upstream


def penalty_and_grads(params, X, labels, eps: float = 1e-5):
    """The input-gradient penalty P = sum(dX**2)/2 of the MLP's loss, and dP/dparams, by a hand-written double backward."""
    X, labels = _check_batch(params, X, labels)
    if not uses_bn(params):
        raise ValueError("params must hold batch-norm layers (init_params with use_bn=True)")
    eps, L = check_eps(eps), n_layers(params)
    # Forward.
    a, tape = X, []
    for i in range(1, L):
        z = a @ params[f"W{i}"]
        h, cache = forward(z, params[f"gamma{i}"], params[f"beta{i}"], eps=eps)
        tape.append((a, h, cache))
        a = np.maximum(h, 0.0)
    logits = a @ params[f"W{L}"] + params[f"b{L}"]
    _, dlogits = _softmax_xent(logits, labels)
    # First backward, down to dX, keeping what the double backward needs.
    dh_list, dz_list = [None] * L, [None] * L
    da = dlogits @ params[f"W{L}"].T
    for i in range(L - 1, 0, -1):
        dh_list[i] = da * (tape[i - 1][1] > 0)
        dz_list[i] = backward(dh_list[i], tape[i - 1][2])[0]
        da = dz_list[i] @ params[f"W{i}"].T
    dX = da
    penalty = 0.5 * float(np.sum(dX * dX))
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    # Backward through the backward: from dX back up to dlogits, collecting gradients on forward values.
    dd = dX  # dP/d(dX)
    direct_z = [None] * L
    for i in range(1, L):
        grads[f"W{i}"] += dd.T @ dz_list[i]  # dX (or da) = dz @ W.T
        ddz = dd @ params[f"W{i}"]
        direct_z[i], dgamma2, ddh = double_backward(ddz, None, None, dh_list[i], tape[i - 1][2])
        grads[f"gamma{i}"] += dgamma2
        dd = ddh * (tape[i - 1][1] > 0)  # ReLU's mask is piecewise constant: no second-order term
    grads[f"W{L}"] += dd.T @ dlogits
    ddlogits = dd @ params[f"W{L}"]
    # dlogits = (softmax(logits) - onehot) / n: its Jacobian is (diag(p) - p p^T) / n per row, symmetric.
    p = dlogits * len(labels)
    p[np.arange(len(labels)), labels] += 1.0
    adj = (p * ddlogits - p * (p * ddlogits).sum(axis=1, keepdims=True)) / len(labels)
    # Ordinary backward of the forward graph, adding each direct gradient where its value was made.
    grads[f"W{L}"] += a.T @ adj  # a: the last hidden activation
    grads[f"b{L}"] += adj.sum(axis=0)
    adj_a = adj @ params[f"W{L}"].T
    for i in range(L - 1, 0, -1):
        a_in, h, cache = tape[i - 1]
        adj_z, dgamma, dbeta = backward(adj_a * (h > 0), cache)
        adj_z = adj_z + direct_z[i]
        grads[f"gamma{i}"] += dgamma
        grads[f"beta{i}"] += dbeta
        grads[f"W{i}"] += a_in.T @ adj_z
        adj_a = adj_z @ params[f"W{i}"].T
    return penalty, grads


__all__ = ["backward_graph", "double_backward", "dx2_paths", "engine_double_backward", "natural_sizes",
           "penalty_and_grads",
           "triangle_one_level_up"]
