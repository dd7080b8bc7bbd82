"""Batch norm by hand: the forward, the staged backward, the compact backward, and eval mode.

Names follow the book's name table (`bnbackprop.names`). Gradients are named `d<name>`.
The statistics are taken over `cache.axes`; for batch norm that is every axis but the channel
axis 1, so `x` may be (N, D) or (N, C, ...) (NCHW, or any number of spatial axes).

Dtypes and range. float16, float32, float64 and longdouble are computed in their own dtype, except
float16, whose statistics and gradients are accumulated in float32 and rounded once to float16 (as
PyTorch does). Inputs of any magnitude the dtype holds, subnormal to its largest, are computed: where
a plain step would over- or underflow, x, gamma and dy are divided by powers of two per statistic,
which is exact, and the results multiplied back. A result that does not fit the dtype (y, dx,
dgamma, dbeta, x - mu, s or inv_s) is refused with a ValueError that names it; `Cache.var` alone is
stored as inf when the variance itself overflows (|x - mu| above about 1.3e154 in float64).

Accuracy, per channel, against exact arithmetic on the values as given (tested in
tests/test_edges_property.py): with u = 2**-24 (float16 and float32), 2**-53 (float64) or 2**-64
(x86 longdouble), B values per channel, s = sqrt(var + eps) and cond = 1 + max|x| / s,
    y:       8 u B^2 (cond |gamma| + |beta|)
    dx:      8 u B^2 cond |gamma| max|dy| / s
    dgamma:  8 u B^2 cond max|dy|        dbeta: 8 u B max|dy|
    eval y:  8 u (|gamma| (max|x| + |running_mean|) / s + |beta|),   eval dx: 8 u |gamma| max|dy| / s
plus, for float16, one rounding to float16 (2**-11 relative), and 4 of the dtype's smallest
subnormal. cond is the honest price of subtracting the mean: a channel whose spread is tiny beside
its values loses digits in any algorithm that rounds x.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

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
    compute_dtype,
    cast_checked,
    count_over,
    is_real_number,
    param_shape,
    reduce_axes,
)


@dataclass(frozen=True)
class Cache:
    """What the forward pass keeps for the backward pass (in float32 for float16 x, but x itself)."""

    x: np.ndarray  # the caller's x
    mu: np.ndarray
    xmu: np.ndarray
    var: np.ndarray  # inf if the variance overflows the dtype; s, inv_s and xhat stay accurate
    s: np.ndarray
    inv_s: np.ndarray
    xhat: np.ndarray
    gamma: np.ndarray  # broadcast-shaped, e.g. (1, C, 1, 1); a copy of the caller's gamma
    eps: float
    ddof: int
    axes: tuple[int, ...]  # axes the statistics reduce over
    param_axes: tuple[int, ...]  # axes dgamma and dbeta sum over
    B: int  # values per statistic
    in_range: bool = False  # s and gamma near enough to 1 that a backward needs no rescaling (see `rescaled`)


def normalize_unchecked(x, gamma_b, beta_b, axes, eps, ddof, param_axes=None):
    """Normalize `x` over `axes` with broadcast-shaped `gamma_b`, `beta_b`; the caller has checked the input."""
    B = count_over(x.shape, axes)
    work = compute_dtype(x.dtype)  # float16 is accumulated in float32, as PyTorch does
    xw, gamma_w, beta_w = (a.astype(work, copy=False) for a in (x, gamma_b, beta_b))
    stats = standardize(xw, axes, eps, ddof, B)
    return _finish(x, stats, gamma_w, beta_w, axes, eps, ddof, param_axes, B)


def normalize_with_stats(x, mu, xmu, var, gamma_b, beta_b, axes, eps, ddof, param_axes, B):
    """The rest of the forward once mu and var are known (on one device or all-reduced); returns (y, cache)."""
    s = np.sqrt(var + eps)
    inv_s = 1.0 / s
    return _finish(x, (mu, xmu, var, s, inv_s, xmu * inv_s), gamma_b, beta_b, axes, eps, ddof, param_axes, B)


def _finish(x, stats, gamma_b, beta_b, axes, eps, ddof, param_axes, B):
    """y = gamma * xhat + beta in the caller's dtype, and the cache."""
    mu, xmu, var, s, inv_s, xhat = stats
    with overflow_named("y = gamma * xhat + beta", xhat.dtype):
        y = gamma_b * xhat + beta_b
    y = cast_result(y, "y", x.dtype)
    axes_p = axes if param_axes is None else param_axes
    g = np.abs(gamma_b)
    in_range = _in_window([exponent(v) for v in (g.min(), g.max(), s.min(), s.max())], xhat.dtype, B)
    return y, Cache(x, mu, xmu, var, s, inv_s, xhat, gamma_b, eps, ddof, axes, axes_p, B, in_range)


def _window(dtype, B) -> int:
    """w such that products of five factors within 2**-w..2**w and B stay in range (195 in float64 for small B)."""
    return (_max_exp(np.dtype(dtype)) - 2 * int(B).bit_length() - 16) // 5


def _in_window(k, dtype, B) -> bool:
    """Are the powers of two k within 2**-w..2**w (`_window`)?"""
    return max(abs(int(v)) for v in k) <= _window(dtype, B)


@functools.lru_cache(maxsize=None)
def _max_exp(dtype: np.dtype) -> int:
    """np.finfo(dtype).maxexp, looked up once per dtype (np.finfo costs microseconds a call)."""
    return int(np.finfo(dtype).maxexp)


def standardize(x, axes, eps, ddof, B):
    """(mu, xmu, var, s, inv_s, xhat) over `axes`; redone on rescaled x when a plain step over- or underflows."""
    try:
        with np.errstate(over="raise", invalid="raise", under="raise"):
            mu = x.mean(axis=axes, keepdims=True)
            xmu = x - mu
            # Two passes: subtracting mu first keeps the variance exact under large offsets.
            var = (xmu * xmu).sum(axis=axes, keepdims=True) / (B - ddof)
            if eps == 0:
                refuse_zero_variance(np.abs(x).max(axis=axes, keepdims=True), var)
            s = np.sqrt(var + eps)
            inv_s = 1.0 / s
            return mu, xmu, var, s, inv_s, xmu * inv_s
    except FloatingPointError:
        return _standardize_rescaled(x, axes, eps, ddof, B)


def exponent(a):
    """Integer k with |a| < 2**k (0 where a is 0): scaling by 2**-k is exact and brings |a| below 1."""
    return np.frexp(a)[1]


def _standardize_rescaled(x, axes, eps, ddof, B):
    """The moments of x / 2**k per statistic (names ending in _r): powers of two scale exactly, so only the range changes."""
    k1 = exponent(np.abs(x).max(axis=axes, keepdims=True))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # checked by _refuse_overflow below
        x_r = np.ldexp(x, -k1)  # |x_r| < 1: the sum cannot overflow
        mu_r = x_r.mean(axis=axes, keepdims=True)
        k2 = exponent(np.abs(x_r - mu_r).max(axis=axes, keepdims=True))
        xmu_r = np.ldexp(x_r - mu_r, -k2)  # |xmu_r| < 1 again, so large squares neither overflow nor underflow
        var_r = (xmu_r * xmu_r).sum(axis=axes, keepdims=True) / (B - ddof)
        k = k1 + k2
        if eps == 0:
            refuse_zero_variance(np.ldexp(np.abs(x_r), -k2).max(axis=axes, keepdims=True), var_r)
        eps_r = np.ldexp(x.dtype.type(eps), -2 * k)  # inf where the variance is negligible beside eps
        plain = (var_r == 0) | np.isinf(eps_r)  # there s = sqrt(eps) exactly
        s_r = np.where(plain, 1, np.sqrt(var_r + eps_r))
        s = np.where(plain, np.sqrt(x.dtype.type(eps)), np.ldexp(s_r, k))
        xmu = np.ldexp(xmu_r, k)
        inv_s = 1.0 / s
        xhat = np.where(plain, xmu * inv_s, xmu_r / s_r)
        stats = np.ldexp(mu_r, k1), xmu, np.ldexp(var_r, 2 * k), s, inv_s, xhat
    _refuse_overflow(xmu, s, inv_s)
    return stats


def _refuse_overflow(xmu, s, inv_s):
    """Say which of the cached intermediates does not fit the dtype."""
    dtype = xmu.dtype
    if not np.all(np.isfinite(xmu)):
        raise ValueError(f"x - mu overflows {dtype}: x spreads more than {float(np.finfo(dtype).max):.3g} "
                         "around its mean; scale x down")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"s = sqrt(var + eps) overflows {dtype}; scale x down")
    if not np.all(np.isfinite(inv_s)):
        raise ValueError(f"inv_s = 1/sqrt(var + eps) overflows {dtype}: the spread of x is below "
                         f"{1 / float(np.finfo(dtype).max):.3g} and eps is too small to cover it; use eps > 0")


class overflow_named:  # noqa: N801 (used like np.errstate)
    """Context: an overflow inside the block becomes a ValueError that names the quantity."""

    def __init__(self, what: str, dtype):
        self.what, self.dtype, self.state = what, np.dtype(dtype), np.errstate(over="raise", invalid="raise")

    def __enter__(self):
        self.state.__enter__()

    def __exit__(self, kind, err, tb):
        self.state.__exit__(kind, err, tb)
        if kind is not None and issubclass(kind, FloatingPointError):
            raise ValueError(f"{self.what} overflows {self.dtype}: the exact value is beyond its largest number, "
                             f"{float(np.finfo(self.dtype).max):.3g}; scale the inputs down") from err


def cast_result(a, name: str, dtype):
    """Cast a result computed in float32 back to the caller's float16, refusing values that do not fit."""
    dtype = np.dtype(dtype)
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):  # reported below, naming the result
        out = a.astype(dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} overflows {dtype}: |{name}| reaches {float(np.max(np.abs(a))):.3g} > "
                         f"{float(np.finfo(dtype).max):.3g}; pass x as float32 or scale the inputs down")
    return out


def refuse_zero_variance(absmax, var):
    """With eps = 0, a constant channel divides 0 by 0; rounding may leave a tiny var instead of 0."""
    with np.errstate(under="ignore"):  # an underflowing bound is 0, which still refuses var == 0
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
    eps, ddof = check_eps(eps, x.dtype), check_ddof(ddof)
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
    return np.array(cast_checked(arr, name, dtype), copy=True)  # the cache keeps its own copy


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
    return x, gamma, beta, reduce_axes(x.ndim), check_eps(eps, x.dtype), check_ddof(ddof)


def forward(x, gamma, beta, eps=1e-5, ddof=0):
    """Batch norm in training mode; returns (y, cache). `ddof=1` gives Bessel's correction (accuracy: module doc)."""
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


def checked_dy(dy, cache):
    """dy in x's shape, within the caller's dtype, then in the dtype the cache computes in."""
    return check_dy(dy, cache.xhat.shape, cache.x.dtype).astype(cache.xhat.dtype, copy=False)


def _union_axes(cache):
    """The axes of a statistic or a parameter: dy's scale is shared along them when rescaling."""
    return tuple(sorted(set(cache.axes) | set(cache.param_axes)))


def backward(dy, cache):
    """Compact backward: dx = (g - mean(g) - xhat * sum(g*xhat)/(B-ddof)) / s, with g = gamma*dy."""
    dy, cache, scale_back = rescaled(dy, cache)  # checked, and brought near 1 if far from it
    dgamma, dbeta = param_grads(dy, cache)
    g = cache.gamma * dy
    sum_g = g.sum(axis=cache.axes, keepdims=True)
    sum_gxhat = (g * cache.xhat).sum(axis=cache.axes, keepdims=True)
    return scale_back(compact_dx(g, sum_g, sum_gxhat, cache), dgamma, dbeta)


def backward_staged(dy, cache):
    """Backward node by node, in reverse order of the forward; `+=` where a node fans out."""
    dy, cache, scale_back = rescaled(dy, cache)  # checked, and brought near 1 if far from it
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
    return scale_back(dx, dgamma, dbeta)


def rescaled(dy, cache):
    """(dy, cache, scale_back) for a backward: checked, and divided by powers of two where far from 1."""
    # Every intermediate of the backwards is a product of at most five factors from dy, gamma, s,
    # 1/s and B. When the largest |dy| of every statistic, gamma and s are within 2**-w..2**w
    # (w = 195 in float64; the forward checked gamma and s), none can over- or underflow, and
    # nothing is rescaled. Otherwise dy, gamma and x are divided by powers of two per statistic,
    # which is exact, and scale_back multiplies the results back: dx is linear in dy and gamma and
    # scales as 1/x, dgamma and dbeta are linear in dy. dy's power is shared along the parameter
    # axes too, so that dgamma and dbeta add values of one scale.
    _check_cache(cache)
    dy, absmax = check_dy(dy, cache.xhat.shape, cache.x.dtype, _union_axes(cache))  # the max checks finiteness too
    dy = dy.astype(cache.xhat.dtype, copy=False)
    if cache.in_range and _in_window([exponent(absmax.min()), exponent(absmax.max())], dy.dtype, cache.B):
        return dy, cache, lambda *grads: _in_caller_dtype(grads, cache)
    kd = exponent(np.abs(dy).max(axis=_union_axes(cache), keepdims=True))
    kg = exponent(np.abs(cache.gamma).max(axis=cache.axes, keepdims=True))
    kx = exponent(cache.s)
    s_r = np.ldexp(cache.s, -kx)
    scaled = replace(cache, xmu=np.ldexp(cache.xmu, -kx), s=s_r, inv_s=1.0 / s_r, gamma=np.ldexp(cache.gamma, -kg))
    kp = np.squeeze(kd, axis=cache.param_axes)  # dy's power of two in the parameters' shape

    def scale_back(dx, dgamma, dbeta):
        with np.errstate(over="ignore"):  # reported below, naming the gradient
            grads = np.ldexp(dx, kg + kd - kx), np.ldexp(dgamma, kp), np.ldexp(dbeta, kp)
        for name, grad in zip(("dx", "dgamma", "dbeta"), grads):
            if not np.all(np.isfinite(grad)):
                raise ValueError(f"{name} overflows {grad.dtype}: the exact gradient is beyond its largest number, "
                                 f"{float(np.finfo(grad.dtype).max):.3g}; scale dy down (the gradients are linear in dy)")
        return _in_caller_dtype(grads, cache)

    with np.errstate(under="ignore"):  # only values far below the largest of their statistic underflow
        return np.ldexp(dy, -kd), scaled, scale_back


def _in_caller_dtype(grads, cache):
    """(dx, dgamma, dbeta) cast back to x's dtype: float16 for float16 x, refusing values that do not fit."""
    return tuple(cast_result(g, name, cache.x.dtype) for g, name in zip(grads, ("dx", "dgamma", "dbeta")))


@dataclass(frozen=True)
class EvalCache:
    """What the eval-mode forward keeps: no batch statistics, so no projection."""

    xhat: np.ndarray
    inv_s: np.ndarray
    gamma: np.ndarray
    axes: tuple[int, ...]
    dtype: np.dtype  # the caller's dtype; xhat and inv_s are float32 for float16 x


def forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Batch norm in eval mode with running statistics; returns (y, cache). Any batch size works."""
    x = check_input(x)
    eps = check_eps(eps, x.dtype)
    C, work = x.shape[1], compute_dtype(x.dtype)
    shape = param_shape(x.ndim, C)
    gamma = check_param(gamma, "gamma", C, x.dtype).reshape(shape).astype(work, copy=False)
    beta = check_param(beta, "beta", C, x.dtype).reshape(shape).astype(work, copy=False)
    # Running statistics are kept in the statistics' dtype (float32 for float16 x).
    rmean = check_param(running_mean, "running_mean", C, work).reshape(shape)
    rvar = check_param(running_var, "running_var", C, work).reshape(shape)
    if np.any(rvar < 0) or np.any(rvar + eps <= 0):
        raise ValueError("running_var must be >= 0, and running_var + eps must be > 0 in every channel")
    with overflow_named("1/sqrt(running_var + eps)", work):
        inv_s = 1.0 / np.sqrt(rvar + eps)
    with overflow_named("xhat = (x - running_mean) / sqrt(running_var + eps)", work):
        xhat = (x.astype(work, copy=False) - rmean) * inv_s
    with overflow_named("y = gamma * xhat + beta", work):
        y = gamma * xhat + beta
    return cast_result(y, "y", x.dtype), EvalCache(xhat, inv_s, gamma, reduce_axes(x.ndim), x.dtype)


def backward_eval(dy, cache):
    """Eval-mode backward: the statistics are constants, so dx = gamma * dy / sqrt(running_var + eps)."""
    if not isinstance(cache, EvalCache):
        hint = " (a training cache: use backward)" if isinstance(cache, Cache) else ""
        raise ValueError(f"cache must be the EvalCache that forward_eval returned; got {type(cache).__name__}{hint}")
    dy = check_dy(dy, cache.xhat.shape, cache.dtype).astype(cache.xhat.dtype, copy=False)
    # Linear in dy: one power of two per channel keeps the products and sums in range.
    k = exponent(np.abs(dy).max(axis=cache.axes, keepdims=True))
    with np.errstate(under="ignore"):
        dy_s = np.ldexp(dy, -k)
    with overflow_named("dx, dgamma or dbeta", cache.xhat.dtype):
        grads = cache.gamma * dy_s * cache.inv_s, (dy_s * cache.xhat).sum(axis=cache.axes), dy_s.sum(axis=cache.axes)
        kp = k.reshape(-1)
        grads = np.ldexp(grads[0], k), np.ldexp(grads[1], kp), np.ldexp(grads[2], kp)
    return tuple(cast_result(g, name, cache.dtype) for g, name in zip(grads, ("dx", "dgamma", "dbeta")))


def update_running_stats(running_mean, running_var, cache, momentum=0.1):
    """PyTorch's update: running = (1 - momentum) * running + momentum * batch, unbiased variance."""
    if not is_real_number(momentum) or not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be a number in [0, 1]; got {momentum!r}")
    _check_cache(cache)
    if cache.B < 2:
        raise ValueError(f"the unbiased variance needs at least 2 values per channel; the cache has B = {cache.B}")
    if not np.all(np.isfinite(cache.var)):
        raise ValueError(f"the batch variance in cache.var overflows {cache.var.dtype}, so running_var cannot hold it; "
                         "scale x down")
    C = cache.mu.size
    rmean = check_param(running_mean, "running_mean", C, cache.mu.dtype)
    rvar = check_param(running_var, "running_var", C, cache.mu.dtype)
    unbiased = cache.var.reshape(C) * (cache.B - cache.ddof) / (cache.B - 1)
    with overflow_named("the running statistics", cache.mu.dtype):
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
