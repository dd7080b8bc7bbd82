"""One derivation, many normalizations: batch, layer, instance and group norm as choices of axes, and RMSNorm.

`normalize` standardizes `x` over any set of `axes` and applies `gamma`, `beta`, which vary along
the axes not in `param_axes`. It builds on `batchnorm.normalize_unchecked`, and its backward is
`batchnorm.backward`, the compact formula with B = the number of values in one statistic.
GroupNorm first views (N, C, ...) as (N, G, C//G, ...), so a cache remembers the caller's shapes.
`rms_norm` divides by the root mean square without subtracting a mean: its backward is the same
formula without the centering term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import batchnorm
from ._validate import (
    as_float_array,
    check_axes,
    check_ddof,
    check_eps,
    check_finite,
    check_input,
    count_over,
    reduce_axes,
)


@dataclass(frozen=True)
class NormCache:
    """The core batch-norm cache plus the shapes the caller used (they differ for GroupNorm)."""

    core: batchnorm.Cache
    x_shape: tuple[int, ...]
    param_shape: tuple[int, ...]


def _check_norm_param(p, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A parameter must have x's sizes along the axes it varies over."""
    arr = as_float_array(p, name)
    if arr.shape != shape:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected {shape}: x's sizes along the axes not in param_axes"
        )
    check_finite(arr, name)
    return arr.astype(dtype, copy=False)


def normalize(x, gamma, beta, axes, param_axes=None, eps=1e-5, ddof=0):
    """Normalize x over `axes`; gamma and beta vary along the axes not in `param_axes` (default: `axes`)."""
    x = check_input(x)
    axes = check_axes(axes, x.ndim)
    if not axes:
        raise ValueError("axes must name at least one axis to take the statistics over")
    param_axes = axes if param_axes is None else check_axes(param_axes, x.ndim, "param_axes")
    eps, ddof = check_eps(eps), check_ddof(ddof)
    B = count_over(x.shape, axes)
    if B < 2:
        raise ValueError(
            f"Expected more than 1 value per statistic when training; axes {axes} of shape {x.shape} hold {B}: "
            "xhat would be 0 and dx would be 0. Reduce over more values."
        )
    pshape = tuple(n for a, n in enumerate(x.shape) if a not in param_axes)
    bshape = tuple(1 if a in param_axes else n for a, n in enumerate(x.shape))
    gamma_b = _check_norm_param(gamma, "gamma", pshape, x.dtype).reshape(bshape)
    beta_b = _check_norm_param(beta, "beta", pshape, x.dtype).reshape(bshape)
    y, core = batchnorm.normalize_unchecked(x, gamma_b, beta_b, axes, eps, ddof, param_axes)
    return y, NormCache(core, x.shape, pshape)


def backward(dy, cache: NormCache):
    """(dx, dgamma, dbeta) by the compact batch-norm formula, in the caller's shapes."""
    if not isinstance(cache, NormCache):
        raise ValueError(f"cache must be the NormCache that a normalization returned; got {type(cache).__name__}")
    dy = as_float_array(dy, "dy")
    if dy.shape != cache.x_shape:
        raise ValueError(f"dy has shape {dy.shape}; expected {cache.x_shape}, the shape of y")
    dx, dgamma, dbeta = batchnorm.backward(dy.reshape(cache.core.x.shape), cache.core)
    return dx.reshape(cache.x_shape), dgamma.reshape(cache.param_shape), dbeta.reshape(cache.param_shape)


def _check_channels(x, kind: str, min_ndim: int = 2) -> np.ndarray:
    """x as (N, C, ...), with at least `min_ndim` dimensions."""
    x = check_input(x)
    if x.ndim < min_ndim:
        raise ValueError(f"{kind} needs x of shape (N, C, ...) with at least {min_ndim} dimensions; got {x.shape}")
    return x


def batch_norm(x, gamma, beta, eps=1e-5, ddof=0):
    """Batch norm: one statistic per channel, over N and every spatial axis; gamma of shape (C,)."""
    x = _check_channels(x, "batch_norm")
    return normalize(x, gamma, beta, reduce_axes(x.ndim), eps=eps, ddof=ddof)


def layer_norm(x, gamma, beta, eps=1e-5, ddof=0):
    """LayerNorm: one statistic per sample, over C and every spatial axis; gamma of shape x.shape[1:]."""
    x = _check_channels(x, "layer_norm")
    return normalize(x, gamma, beta, tuple(range(1, x.ndim)), param_axes=(0,), eps=eps, ddof=ddof)


def instance_norm(x, gamma, beta, eps=1e-5, ddof=0):
    """InstanceNorm: one statistic per sample and channel, over the spatial axes; gamma of shape (C,)."""
    x = _check_channels(x, "instance_norm", min_ndim=3)
    spatial = tuple(range(2, x.ndim))
    return normalize(x, gamma, beta, spatial, param_axes=(0, *spatial), eps=eps, ddof=ddof)


def group_shape(shape: tuple[int, ...], groups: int) -> tuple[int, ...]:
    """(N, C, ...) viewed as (N, G, C//G, ...); refuses a G that does not divide C."""
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer; got {groups!r}")
    C = shape[1]
    if C % groups:
        raise ValueError(f"groups={groups} does not divide the {C} channels; choose G with C % G == 0")
    return (shape[0], int(groups), C // int(groups), *shape[2:])


def group_norm(x, gamma, beta, groups, eps=1e-5, ddof=0):
    """GroupNorm: one statistic per sample and group of C//G channels; gamma of shape (C,), per channel."""
    x = _check_channels(x, "group_norm")
    view = group_shape(x.shape, groups)
    C = x.shape[1]
    # In the (N, G, C//G, ...) view a per-channel gamma is a (G, C//G) table.
    gamma = _check_norm_param(gamma, "gamma", (C,), x.dtype).reshape(view[1:3])
    beta = _check_norm_param(beta, "beta", (C,), x.dtype).reshape(view[1:3])
    spatial = tuple(range(3, len(view)))
    y, cache = normalize(x.reshape(view), gamma, beta, (2, *spatial), param_axes=(0, *spatial), eps=eps, ddof=ddof)
    return y.reshape(x.shape), NormCache(cache.core, x.shape, (C,))


def statistic_members(cache: NormCache, index) -> np.ndarray:
    """Boolean mask over x: the values that share one mean and variance with x[index]."""
    core = cache.core
    if len(index) != len(cache.x_shape) or not all(0 <= i < n for i, n in zip(index, cache.x_shape)):
        raise ValueError(f"index must be a position in x of shape {cache.x_shape}, one entry per axis; got {index!r}")
    flat = np.ravel_multi_index(index, cache.x_shape)
    at = np.unravel_index(flat, core.x.shape)
    # Members agree with x[index] on every axis that is not reduced over.
    grids = np.indices(core.x.shape, sparse=True)
    mask = np.ones(core.x.shape, dtype=bool)
    for a, grid in enumerate(grids):
        if a not in core.axes:
            mask &= grid == at[a]
    return mask.reshape(cache.x_shape)


@dataclass(frozen=True)
class RMSCache:
    """What rms_norm keeps for the backward: no mean is taken, so there is no centering."""

    x: np.ndarray
    s: np.ndarray  # sqrt(mean(x^2) + eps) over the last axis, kept as a trailing axis of size 1
    inv_s: np.ndarray
    xhat: np.ndarray
    gamma: np.ndarray
    eps: float


def rms_norm(x, gamma, eps=1e-5):
    """RMSNorm over the last axis: y = gamma * x / sqrt(mean(x^2) + eps), gamma of shape (D,), no beta."""
    x = check_input(x)
    eps = check_eps(eps)
    gamma = _check_norm_param(gamma, "gamma", (x.shape[-1],), x.dtype)
    ms = (x * x).mean(axis=-1, keepdims=True)
    # With eps = 0 only ms == 0 (a row of zeros, or squares that underflow) divides by zero; IEEE makes it exact.
    if eps == 0 and np.any(ms == 0):
        raise ValueError("eps = 0 with a row whose mean square is 0: xhat = 0/0 there. Use eps > 0 (for example 1e-5).")
    s = np.sqrt(ms + eps)
    inv_s = 1.0 / s
    xhat = x * inv_s
    return gamma * xhat, RMSCache(x, s, inv_s, xhat, gamma, eps)


def rms_norm_backward(dy, cache: RMSCache):
    """(dx, dgamma): dx = (g - xhat * mean(g * xhat)) / s with g = gamma * dy; batch norm's formula without mean(g)."""
    if not isinstance(cache, RMSCache):
        raise ValueError(f"cache must be the RMSCache that rms_norm returned; got {type(cache).__name__}")
    dy = as_float_array(dy, "dy")
    if dy.shape != cache.x.shape:
        raise ValueError(f"dy has shape {dy.shape}; expected {cache.x.shape}, the shape of y")
    check_finite(dy, "dy")
    g = cache.gamma * dy
    dx = (g - cache.xhat * (g * cache.xhat).mean(axis=-1, keepdims=True)) * cache.inv_s
    dgamma = (dy * cache.xhat).reshape(-1, cache.x.shape[-1]).sum(axis=0)
    return dx, dgamma


__all__ = [
    "NormCache",
    "RMSCache",
    "backward",
    "batch_norm",
    "check_axes",
    "group_norm",
    "group_shape",
    "instance_norm",
    "layer_norm",
    "normalize",
    "rms_norm",
    "rms_norm_backward",
    "statistic_members",
]
