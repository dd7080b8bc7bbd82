"""Batch norm by hand: the forward, the staged backward, the compact backward, and eval mode.

Names follow the book's name table (`bnbackprop.names`). Gradients are named `d<name>`.
The statistics are taken over `cache.axes`; for batch norm that is every axis but the channel
axis 1, so `x` may be (N, D) or (N, C, H, W, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import (
    as_float_array,
    check_axes,
    check_ddof,
    check_dy,
    check_eps,
    check_finite,
    check_input,
    check_param,
    check_training_batch,
    count_over,
    is_real_number,
    param_shape,
    reduce_axes,
)


@dataclass(frozen=True)
class Cache:
    """What the forward pass keeps for the backward pass."""

    x: np.ndarray
    mu: np.ndarray
    xmu: np.ndarray
    var: np.ndarray
    s: np.ndarray
    inv_s: np.ndarray
    xhat: np.ndarray
    gamma: np.ndarray  # broadcast-shaped, e.g. (1, C, 1, 1)
    eps: float
    ddof: int
    axes: tuple[int, ...]  # axes the statistics reduce over
    param_axes: tuple[int, ...]  # axes dgamma and dbeta sum over
    B: int  # values per statistic


def normalize_unchecked(x, gamma_b, beta_b, axes, eps, ddof, param_axes=None):
    """Normalize `x` over `axes` with broadcast-shaped `gamma_b`, `beta_b`; the caller has checked the input."""
    B = count_over(x.shape, axes)
    mu = x.mean(axis=axes, keepdims=True)
    xmu = x - mu
    # Two passes: subtracting mu first keeps the variance exact under large offsets.
    var = (xmu * xmu).sum(axis=axes, keepdims=True) / (B - ddof)
    if eps == 0:
        refuse_zero_variance(np.abs(x).max(axis=axes, keepdims=True), var)
    return normalize_with_stats(x, mu, xmu, var, gamma_b, beta_b, axes, eps, ddof, param_axes, B)


def normalize_with_stats(x, mu, xmu, var, gamma_b, beta_b, axes, eps, ddof, param_axes, B):
    """The rest of the forward once mu and var are known (on one device or all-reduced); returns (y, cache)."""
    s = np.sqrt(var + eps)
    inv_s = 1.0 / s
    xhat = xmu * inv_s
    y = gamma_b * xhat + beta_b
    axes_p = axes if param_axes is None else param_axes
    return y, Cache(x, mu, xmu, var, s, inv_s, xhat, gamma_b, eps, ddof, axes, axes_p, B)


def refuse_zero_variance(absmax, var):
    """With eps = 0, a constant channel divides 0 by 0; rounding may leave a tiny var instead of 0."""
    tiny = (16 * np.finfo(var.dtype).eps * absmax) ** 2
    if np.any(var <= tiny):
        raise ValueError(
            "eps = 0 with a channel of zero variance: xhat = 0/0 there. "
            "Use eps > 0 (for example 1e-5), or give every channel at least two distinct values."
        )


def normalize_forward(x, gamma_b, beta_b, axes, eps=1e-5, ddof=0, param_axes=None):
    """Normalize `x` over any `axes`; gamma_b, beta_b are 1 along `param_axes` (default `axes`) and x's size elsewhere."""
    x = check_input(x)
    axes = check_axes(axes, x.ndim)
    param_axes = axes if param_axes is None else check_axes(param_axes, x.ndim, "param_axes")
    eps, ddof = check_eps(eps), check_ddof(ddof)
    B = count_over(x.shape, axes)
    if B - ddof < 1:
        raise ValueError(f"axes {axes} of x with shape {x.shape} hold {B} value(s) per statistic; "
                         f"with ddof={ddof} the variance divides by B - ddof = {B - ddof}: need B > ddof")
    bshape = tuple(1 if a in param_axes else n for a, n in enumerate(x.shape))
    gamma_b, beta_b = (_check_broadcast_param(p, name, bshape, x.dtype) for p, name in ((gamma_b, "gamma_b"), (beta_b, "beta_b")))
    return normalize_unchecked(x, gamma_b, beta_b, axes, eps, ddof, param_axes)


def _check_broadcast_param(p, name, bshape, dtype):
    """A broadcast-shaped parameter: size 1 along param_axes, x's size along the rest."""
    arr = as_float_array(p, name)
    if arr.shape != bshape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {bshape}: 1 along param_axes, x's size elsewhere")
    check_finite(arr, name)
    return arr.astype(dtype, copy=False)


def _check_cache(cache):
    """The backward passes need the Cache that a training forward returned."""
    if not isinstance(cache, Cache):
        raise ValueError(f"cache must be the Cache that bnbackprop.forward returned; got {type(cache).__name__}")


def check_training_args(x, gamma, beta, eps, ddof):
    """The checks of every training-mode entry point; returns x, broadcast gamma and beta, axes, eps, ddof."""
    x = check_input(x)
    check_training_batch(x.shape)
    shape = param_shape(x.ndim, x.shape[1])
    gamma = check_param(gamma, "gamma", x.shape[1], x.dtype).reshape(shape)
    beta = check_param(beta, "beta", x.shape[1], x.dtype).reshape(shape)
    return x, gamma, beta, reduce_axes(x.ndim), check_eps(eps), check_ddof(ddof)


def forward(x, gamma, beta, eps=1e-5, ddof=0):
    """Batch norm in training mode; returns (y, cache). `ddof=1` gives Bessel's correction."""
    x, gamma, beta, axes, eps, ddof = check_training_args(x, gamma, beta, eps, ddof)
    return normalize_unchecked(x, gamma, beta, axes, eps, ddof)


def param_grads(dy, cache):
    """dgamma and dbeta: sums over the axes the parameters were broadcast along."""
    shape = _param_out_shape(cache)
    dbeta = dy.sum(axis=cache.param_axes).reshape(shape)
    dgamma = (dy * cache.xhat).sum(axis=cache.param_axes).reshape(shape)
    return dgamma, dbeta


def _param_out_shape(cache):
    """Parameter shape as the caller passed it: gamma without its broadcast axes."""
    return tuple(n for a, n in enumerate(cache.gamma.shape) if a not in cache.param_axes)


def compact_dx(g, sum_g, sum_gxhat, cache):
    """dx = (g - sum(g)/B - xhat * sum(g*xhat)/(B - ddof)) / s: the two sums may come from an all-reduce."""
    # sum(g*xhat)/(B - ddof) is B/(B-ddof) times mean(g*xhat): the n/(n-1) factor of a Bessel forward.
    return (g - sum_g / cache.B - cache.xhat * (sum_gxhat / (cache.B - cache.ddof))) * cache.inv_s


def backward(dy, cache):
    """Compact backward: dx = (g - mean(g) - xhat * sum(g*xhat)/(B-ddof)) / s, with g = gamma*dy."""
    _check_cache(cache)
    dy = check_dy(dy, cache.xhat.shape, cache.xhat.dtype)
    dgamma, dbeta = param_grads(dy, cache)
    g = cache.gamma * dy
    sum_g = g.sum(axis=cache.axes, keepdims=True)
    sum_gxhat = (g * cache.xhat).sum(axis=cache.axes, keepdims=True)
    return compact_dx(g, sum_g, sum_gxhat, cache), dgamma, dbeta


def backward_staged(dy, cache):
    """Backward node by node, in reverse order of the forward; `+=` where a node fans out."""
    _check_cache(cache)
    dy = check_dy(dy, cache.xhat.shape, cache.xhat.dtype)
    axes, B, ddof = cache.axes, cache.B, cache.ddof
    xmu, s, inv_s, xhat = cache.xmu, cache.s, cache.inv_s, cache.xhat
    pshape = _param_out_shape(cache)
    # y = gxhat + beta
    dgxhat = dy
    dbeta = dy.sum(axis=cache.param_axes).reshape(pshape)
    # gxhat = gamma * xhat
    dgamma = (dgxhat * xhat).sum(axis=cache.param_axes).reshape(pshape)
    dxhat = cache.gamma * dgxhat
    # xhat = xmu * inv_s
    dxmu = dxhat * inv_s
    dinv_s = (dxhat * xmu).sum(axis=axes, keepdims=True)
    # inv_s = 1 / s
    ds = -dinv_s / s**2
    # s = sqrt(vareps)
    dvareps = ds * 0.5 / s
    # vareps = var + eps
    dvar = dvareps
    # var = sum(xmusq) / (B - ddof)
    dxmusq = np.broadcast_to(dvar / (B - ddof), xmu.shape)
    # xmusq = xmu**2: the second use of xmu, so its gradient adds on
    dxmu = dxmu + 2 * xmu * dxmusq
    # xmu = x - mu
    dx = dxmu.copy()
    dmu = -dxmu.sum(axis=axes, keepdims=True)
    # mu = mean(x): the second use of x
    dx += np.broadcast_to(dmu / B, dx.shape)
    return dx, dgamma, dbeta


@dataclass(frozen=True)
class EvalCache:
    """What the eval-mode forward keeps: no batch statistics, so no projection."""

    xhat: np.ndarray
    inv_s: np.ndarray
    gamma: np.ndarray
    axes: tuple[int, ...]


def forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Batch norm in eval mode with running statistics; returns (y, cache). Any batch size works."""
    x = check_input(x)
    eps = check_eps(eps)
    C = x.shape[1]
    shape = param_shape(x.ndim, C)
    gamma = check_param(gamma, "gamma", C, x.dtype).reshape(shape)
    beta = check_param(beta, "beta", C, x.dtype).reshape(shape)
    rmean = check_param(running_mean, "running_mean", C, x.dtype).reshape(shape)
    rvar = check_param(running_var, "running_var", C, x.dtype).reshape(shape)
    if np.any(rvar < 0) or np.any(rvar + eps <= 0):
        raise ValueError("running_var must be >= 0, and running_var + eps must be > 0 in every channel")
    inv_s = 1.0 / np.sqrt(rvar + eps)
    xhat = (x - rmean) * inv_s
    return gamma * xhat + beta, EvalCache(xhat, inv_s, gamma, reduce_axes(x.ndim))


def backward_eval(dy, cache):
    """Eval-mode backward: the statistics are constants, so dx = gamma * dy / sqrt(running_var + eps)."""
    dy = check_dy(dy, cache.xhat.shape, cache.xhat.dtype)
    dbeta = dy.sum(axis=cache.axes)
    dgamma = (dy * cache.xhat).sum(axis=cache.axes)
    return cache.gamma * dy * cache.inv_s, dgamma, dbeta


def update_running_stats(running_mean, running_var, cache, momentum=0.1):
    """PyTorch's update: running = (1 - momentum) * running + momentum * batch, unbiased variance."""
    if not is_real_number(momentum) or not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be a number in [0, 1]; got {momentum!r}")
    _check_cache(cache)
    if cache.B < 2:
        raise ValueError(f"the unbiased variance needs at least 2 values per channel; the cache has B = {cache.B}")
    C = cache.mu.size
    rmean = check_param(running_mean, "running_mean", C, cache.mu.dtype)
    rvar = check_param(running_var, "running_var", C, cache.mu.dtype)
    unbiased = cache.var.reshape(C) * (cache.B - cache.ddof) / (cache.B - 1)
    new_mean = (1 - momentum) * rmean + momentum * cache.mu.reshape(C)
    new_var = (1 - momentum) * rvar + momentum * unbiased
    return new_mean, new_var


__all__ = [
    "Cache",
    "EvalCache",
    "backward",
    "backward_eval",
    "backward_staged",
    "forward",
    "forward_eval",
    "check_training_args",
    "compact_dx",
    "normalize_forward",
    "normalize_unchecked",
    "normalize_with_stats",
    "param_grads",
    "refuse_zero_variance",
    "update_running_stats",
]
