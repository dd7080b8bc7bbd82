"""Batch norm across K simulated devices: per-device BN, and SyncBatchNorm with counted all-reduces.

A batch (N, C, ...) is split along N into K shards, one per device. Per-device BN normalizes each
shard with its own statistics and needs no communication. SyncBatchNorm gets the global statistics
from all-reduces: the forward sums `x` and then `xmu**2`, the backward sums `g` and `g * xhat`.
Every all-reduce is logged with the bytes one device contributes, so the two versions can be
compared by what they communicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import batchnorm
from ._validate import (
    check_ddof,
    check_dy,
    check_eps,
    check_input,
    check_param,
    count_per_channel,
    param_shape,
    reduce_axes,
)


@dataclass(frozen=True)
class Message:
    """One all-reduce: what was summed and how many bytes each device contributed."""

    name: str
    nbytes: int


@dataclass
class Devices:
    """K simulated devices that can all-reduce (sum) one array each and log what they sent."""

    K: int
    log: list[Message] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.K, bool) or not isinstance(self.K, (int, np.integer)) or self.K < 1:
            raise ValueError(f"K, the number of devices, must be a positive integer; got {self.K!r}")

    def all_reduce(self, name: str, parts) -> list[np.ndarray]:
        """Sum one array per device; every device gets its own copy of the total."""
        if len(parts) != self.K or len({np.shape(p) for p in parts}) != 1:
            raise ValueError(f"all_reduce needs {self.K} arrays of one shape, one per device; got {len(parts)}")
        total = np.sum(np.stack(parts), axis=0)
        self.log.append(Message(name, int(np.asarray(parts[0]).nbytes)))
        return [total.copy() for _ in range(self.K)]

    def bytes_per_device(self) -> int:
        """Bytes one device contributed to all the all-reduces so far (the payload, not ring traffic)."""
        return sum(m.nbytes for m in self.log)

    def ring_bytes_per_device(self) -> float:
        """Bytes one device sends in ring all-reduces: 2 (K-1)/K times the payload."""
        return 2 * (self.K - 1) / self.K * self.bytes_per_device()


def split_batch(x, K: int) -> list[np.ndarray]:
    """Split x along the batch axis into K nearly equal, non-empty shards."""
    x = check_input(x)
    Devices(K)  # validates K
    if K > x.shape[0]:
        raise ValueError(f"cannot split a batch of {x.shape[0]} samples over K={K} devices; need K <= N")
    return np.array_split(x, K, axis=0)


def _check_shards(shards, gamma, beta):
    """Shards must agree on everything but the batch size; gamma and beta are per channel."""
    shards = [check_input(s, f"shard {k}") for k, s in enumerate(shards)]
    if not shards or len({s.shape[1:] for s in shards}) != 1:
        raise ValueError("shards must be a non-empty list of (N_k, C, ...) arrays with the same C, H, W, ...")
    C, dtype = shards[0].shape[1], shards[0].dtype
    shape = param_shape(shards[0].ndim, C)
    gamma = check_param(gamma, "gamma", C, dtype).reshape(shape)
    beta = check_param(beta, "beta", C, dtype).reshape(shape)
    return shards, gamma, beta


def sync_forward(shards, gamma, beta, devices: Devices, eps=1e-5, ddof=0):
    """SyncBatchNorm forward: two all-reduces give the global mean and variance; returns (ys, caches)."""
    shards, gamma, beta = _check_shards(shards, gamma, beta)
    eps, ddof = check_eps(eps), check_ddof(ddof)
    axes = reduce_axes(shards[0].ndim)
    # The count rides along with the first sum, so no device needs to know the others' sizes.
    sums = [np.append(s.sum(axis=axes), s.dtype.type(count_per_channel(s.shape))) for s in shards]
    total = devices.all_reduce("sum(x), count", sums)[0]
    B = int(total[-1])
    if B < 2:
        raise ValueError("Expected more than 1 value per channel when training, over all devices together")
    mu = (total[:-1] / B).reshape(gamma.shape)
    xmus = [s - mu for s in shards]
    # Two passes, as on one device: summing xmu**2 keeps the variance exact under large offsets.
    sq = devices.all_reduce("sum(xmu**2)", [(v * v).sum(axis=axes) for v in xmus])[0]
    var = (sq / (B - ddof)).reshape(gamma.shape)
    if eps == 0:
        # The same guard as on one device; the per-channel max |x| over all shards is a check, not traffic.
        absmax = np.max([np.abs(s).max(axis=axes, keepdims=True) for s in shards], axis=0)
        batchnorm.refuse_zero_variance(absmax, var)
    outs = [batchnorm.normalize_with_stats(s, mu, xmu, var, gamma, beta, axes, eps, ddof, axes, B)
            for s, xmu in zip(shards, xmus)]
    return [y for y, _ in outs], [c for _, c in outs]


def sync_backward(dys, caches, devices: Devices):
    """SyncBatchNorm backward: all-reduce sum(g) and sum(g*xhat), then the compact formula per device."""
    if len(dys) != len(caches):
        raise ValueError(f"need one dy per device: got {len(dys)} dy arrays for {len(caches)} caches")
    dys = [check_dy(dy, c.xhat.shape, c.xhat.dtype) for dy, c in zip(dys, caches)]
    c0 = caches[0]
    gs = [c.gamma * dy for dy, c in zip(dys, caches)]
    sum_g = devices.all_reduce("sum(g)", [g.sum(axis=c0.axes, keepdims=True) for g in gs])[0]
    sum_gxhat = devices.all_reduce("sum(g*xhat)", [(g * c.xhat).sum(axis=c0.axes, keepdims=True)
                                                   for g, c in zip(gs, caches)])[0]
    dxs = [batchnorm.compact_dx(g, sum_g, sum_gxhat, c) for g, c in zip(gs, caches)]
    dgamma, dbeta = _reduce_param_grads(dys, caches, devices)
    return dxs, dgamma, dbeta


def _reduce_param_grads(dys, caches, devices: Devices):
    """dgamma and dbeta: each device's sums, all-reduced as any data-parallel parameter gradient is."""
    parts = [np.concatenate(batchnorm._param_grads(dy, c)) for dy, c in zip(dys, caches)]
    total = devices.all_reduce("dgamma, dbeta (data parallel)", parts)[0]
    C = total.size // 2
    return total[:C], total[C:]


def local_forward(shards, gamma, beta, eps=1e-5, ddof=0):
    """Per-device BN: each shard normalized with its own statistics, no communication."""
    shards, _, _ = _check_shards(shards, gamma, beta)
    pairs = [batchnorm.forward(s, gamma, beta, eps, ddof) for s in shards]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def local_backward(dys, caches, devices: Devices):
    """Per-device BN backward: local statistics' gradients; only dgamma and dbeta are all-reduced."""
    if len(dys) != len(caches):
        raise ValueError(f"need one dy per device: got {len(dys)} dy arrays for {len(caches)} caches")
    dxs = [batchnorm.backward(dy, c)[0] for dy, c in zip(dys, caches)]
    dgamma, dbeta = _reduce_param_grads(dys, caches, devices)
    return dxs, dgamma, dbeta


def data_parallel_step(x, gamma, beta, dy, K: int, sync: bool, eps=1e-5, ddof=0):
    """Forward and backward of BN on x split over K devices; returns (y, dx, dgamma, dbeta, devices)."""
    devices = Devices(K)
    shards = split_batch(x, K)
    dy = check_dy(dy, np.shape(x), shards[0].dtype)
    dys = np.split(dy, np.cumsum([len(s) for s in shards])[:-1], axis=0)
    if sync:
        ys, caches = sync_forward(shards, gamma, beta, devices, eps, ddof)
        dxs, dgamma, dbeta = sync_backward(dys, caches, devices)
    else:
        ys, caches = local_forward(shards, gamma, beta, eps, ddof)
        dxs, dgamma, dbeta = local_backward(dys, caches, devices)
    return np.concatenate(ys), np.concatenate(dxs), dgamma, dbeta, devices


__all__ = [
    "Devices",
    "Message",
    "data_parallel_step",
    "local_backward",
    "local_forward",
    "split_batch",
    "sync_backward",
    "sync_forward",
]
