"""Batch norm over a batch split across K devices: per-device BN, and SyncBatchNorm through a communicator.

A batch (N, C, ...) is split along N into K shards, one per device. Per-device BN normalizes each
shard with its own statistics and needs no communication. SyncBatchNorm uses the statistics of the
whole batch and sends what PyTorch's `SyncBatchNorm` sends:

- forward: one all-gather of each device's (mean, var, count), combined with Chan's formula;
- backward: one all-reduce of (sum dy, sum dy*xmu).

dgamma and dbeta are then summed over devices like any data-parallel parameter gradient (one more
all-reduce, in both versions). The collectives go through a communicator: `Devices` simulates K
devices in one process; `bnbackprop.syncbn_mpi.MPIComm` runs one device per MPI process. Both log
every message with the bytes one device contributes, and both compute the same bits.

Precision: float32, float64 and longdouble are computed in their own dtype; float16 is computed in
float32 (its sums overflow at 65504) and y, dx are returned in float16, dgamma and dbeta in float32.
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
    """One collective: its name, its kind, and the bytes one device contributed."""

    name: str
    op: str  # "all-gather" or "all-reduce"
    nbytes: int


class Communicator:
    """The collectives SyncBN needs; a subclass provides `_gather` (and `_gather_objects`) for its transport."""

    K: int  # devices in all
    local: tuple[int, ...]  # the devices this process holds, by global index
    log: list[Message]
    layout: tuple[int, np.dtype] | None = None  # (C, dtype) of the last sync_forward's statistics

    def all_gather(self, name: str, parts) -> np.ndarray:
        """Every device's array, stacked in device order: shape (K, ...). One array per local device."""
        parts = self._check_parts(name, parts)
        gathered = self._gather(parts)
        self.log.append(Message(name, "all-gather", int(parts[0].nbytes)))
        return gathered

    def all_reduce(self, name: str, parts) -> np.ndarray:
        """The sum over devices, added in device order, so every device and transport gets the same bits."""
        parts = self._check_parts(name, parts)
        gathered = self._gather(parts)
        self.log.append(Message(name, "all-reduce", int(parts[0].nbytes)))
        total = gathered[0].copy()
        for part in gathered[1:]:
            total += part
        return total

    def gather_errors(self, errors) -> list:
        """Each device's error text (or None): only sent after a collective showed that some device failed."""
        if len(errors) != len(self.local):
            raise ValueError(f"gather_errors needs one entry per local device ({len(self.local)}); got {len(errors)}")
        return self._gather_objects(list(errors))

    def bytes_per_device(self) -> int:
        """Bytes one device contributed to all the collectives so far (payloads, not the wire traffic)."""
        return sum(m.nbytes for m in self.log)

    def _check_parts(self, name, parts):
        """One contiguous array per local device, all of one shape and dtype."""
        parts = [np.require(p, requirements="C") for p in parts]  # keeps 0-d records 0-d
        if len(parts) != len(self.local) or len({(p.shape, p.dtype) for p in parts}) != 1:
            raise ValueError(f"{name}: need {len(self.local)} arrays of one shape and dtype, one per local device; "
                             f"got {len(parts)}")
        return parts

    def _gather(self, parts) -> np.ndarray:
        raise NotImplementedError

    def _gather_objects(self, objs) -> list:
        raise NotImplementedError


@dataclass
class Devices(Communicator):
    """K simulated devices in one process: this process holds all of them."""

    K: int
    log: list[Message] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.K, bool) or not isinstance(self.K, (int, np.integer)) or self.K < 1:
            raise ValueError(f"K, the number of devices, must be a positive integer; got {self.K!r}")
        self.K = int(self.K)
        self.local = tuple(range(self.K))

    def _gather(self, parts) -> np.ndarray:
        return np.stack(parts)

    def _gather_objects(self, objs) -> list:
        return objs


@dataclass(frozen=True)
class ShardCache:
    """What a forward keeps for one device: the batch-norm Cache, and the mode that made it."""

    bn: batchnorm.Cache  # statistics global (mode "sync") or of this shard (mode "local")
    mode: str  # "sync" or "local": each backward accepts only its own forward's caches
    dtype: np.dtype  # the caller's dtype; float16 is computed in float32
    device: int


def work_dtype(dtype) -> np.dtype:
    """The dtype the statistics are computed in: float32 for float16, else the input's own."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def stats_record(C: int, dtype) -> np.dtype:
    """The forward's message: C means and C variances in the working dtype, and the count as an int64."""
    wd = work_dtype(dtype)
    return np.dtype([("mean", wd, (C,)), ("var", wd, (C,)), ("count", np.int64)])


def forward_message_bytes(C: int, dtype) -> int:
    """Bytes one device contributes to the forward's all-gather: 2C numbers and an 8-byte count."""
    return 2 * C * work_dtype(dtype).itemsize + 8


def backward_message_bytes(C: int, dtype) -> int:
    """Bytes one device contributes to the backward's all-reduce of (sum dy, sum dy*xmu): 2C numbers."""
    return 2 * C * work_dtype(dtype).itemsize


def split_batch(x, K) -> list[np.ndarray]:
    """Split x along the batch axis: into K nearly equal shards, or into shards of the given sizes."""
    x = check_input(x)
    if isinstance(K, (list, tuple)):
        sizes = list(K)
        if not sizes or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in sizes) \
                or sum(sizes) != x.shape[0]:
            raise ValueError(f"shard sizes must be positive integers that add up to N = {x.shape[0]}; got {sizes}")
        return np.split(x, np.cumsum(sizes)[:-1], axis=0)
    Devices(K)  # validates K
    if K > x.shape[0]:
        raise ValueError(f"cannot split a batch of {x.shape[0]} samples over K={K} devices; need K <= N")
    return np.array_split(x, K, axis=0)


def _check_comm(comm):
    """The communicator must be a Devices or an MPIComm (any Communicator)."""
    if not isinstance(comm, Communicator):
        raise ValueError(f"devices must be a Communicator (Devices(K) or MPIComm()); got {type(comm).__name__}")
    return comm


def _check_local_count(what, items, comm):
    """One item per device that this process holds."""
    if not isinstance(items, (list, tuple)) or len(items) != len(comm.local):
        n = len(items) if isinstance(items, (list, tuple)) else type(items).__name__
        raise ValueError(f"{what} must be a list with one entry per local device ({len(comm.local)}); got {n}")


def _shard_stats(shard, gamma, beta, k, eps, ddof):
    """Check one device's inputs; return its shard in the working dtype and its (mean, var, count) record."""
    check_eps(eps), check_ddof(ddof)
    shard = check_input(shard, f"shard {k}")
    C = np.shape(gamma)[0] if np.ndim(gamma) == 1 else None
    if C is None or shard.shape[1] != C:
        raise ValueError(f"shard {k} has shape {shard.shape}; expected (N_k, C, ...) with C = {C}, the length of gamma")
    wd = work_dtype(shard.dtype)
    check_param(gamma, "gamma", C, wd), check_param(beta, "beta", C, wd)
    work = shard.astype(wd, copy=False)
    axes = reduce_axes(work.ndim)
    B_k = count_per_channel(work.shape)
    mean = work.mean(axis=axes)
    xmu = work - mean.reshape(param_shape(work.ndim, C))
    rec = np.zeros((), stats_record(C, shard.dtype))
    rec["mean"], rec["var"], rec["count"] = mean, (xmu * xmu).sum(axis=axes) / B_k, B_k
    return work, rec


def _failed_record(shards, gamma):
    """The record a device sends when its input was refused: count -1 tells every device to stop."""
    C = np.shape(gamma)[0] if np.ndim(gamma) == 1 else 0
    dtypes = [np.asarray(s).dtype for s in shards if np.asarray(s).dtype.kind == "f"]
    rec = np.zeros((), stats_record(C, dtypes[0] if dtypes else np.float64))
    rec["count"] = -1
    return rec


def _raise_agreed(comm, errors, fallback):
    """Every device raises the same ValueError: the first failing device's message, or `fallback`."""
    texts = comm.gather_errors(errors)
    first = next((t for t in texts if t is not None), None)
    raise ValueError(first if first is not None else fallback)


def combine_stats(means, variances, counts):
    """Chan, Golub and LeVeque's pairwise update folded over devices: the batch's mean, M2 = sum xmu**2, and B."""
    # B counts the values folded in so far, B_k those of device k (the name table's letters).
    mean, m2, B = np.zeros_like(means[0]), np.zeros_like(variances[0]), 0
    for mean_k, var_k, B_k in zip(means, variances, counts):
        B_k = int(B_k)
        B_ab = B + B_k
        delta = mean_k - mean
        # The shift between the means is squared, never the raw values: no cancellation under large offsets.
        mean = mean + delta * (B_k / B_ab)
        m2 = m2 + var_k * B_k + delta * delta * (B * B_k / B_ab)
        B = B_ab
    return mean, m2, B


def sync_forward(shards, gamma, beta, devices: Communicator, eps=1e-5, ddof=0):
    """SyncBatchNorm forward: one all-gather of each device's (mean, var, count); returns (ys, caches)."""
    comm = _check_comm(devices)
    _check_local_count("shards", shards, comm)
    works, records, errors = [], [], []
    for k, shard in zip(comm.local, shards):
        try:
            work, rec = _shard_stats(shard, gamma, beta, k, eps, ddof)
            works.append(work), records.append(rec), errors.append(None)
        except (ValueError, TypeError) as err:
            records.append(_failed_record(shards, gamma))
            errors.append(f"device {k} of {comm.K} refused its input: {err}")
    gathered = comm.all_gather("mean, var, count", records)
    if np.any(gathered["count"] < 0):
        _raise_agreed(comm, errors, "a device refused its input")
    mean, m2, B = combine_stats(gathered["mean"], gathered["var"], gathered["count"])
    comm.layout = (mean.size, mean.dtype)  # the backward's message: a device whose input fails still sends this shape
    if B < 2:
        raise ValueError("Expected more than 1 value per channel when training, over all devices together")
    ddof, eps = check_ddof(ddof), check_eps(eps)
    shape = param_shape(works[0].ndim, mean.size)
    mu, var = mean.reshape(shape), (m2 / (B - ddof)).reshape(shape)
    if eps == 0:
        # |x| <= |mean_k| + sqrt(B_k var_k) on every device: a bound all devices compute alike from the message.
        bound = np.max(np.abs(gathered["mean"]) + np.sqrt(gathered["var"] * gathered["count"][:, None]), axis=0)
        batchnorm.refuse_zero_variance(bound.reshape(shape), var)
    gamma_b = check_param(gamma, "gamma", mean.size, mean.dtype).reshape(shape)
    beta_b = check_param(beta, "beta", mean.size, mean.dtype).reshape(shape)
    axes = reduce_axes(works[0].ndim)
    ys, caches = [], []
    for k, shard, work in zip(comm.local, shards, works):
        y, cache = batchnorm.normalize_with_stats(work, mu, work - mu, var, gamma_b, beta_b, axes, eps, ddof, axes, B)
        ys.append(_to_caller_dtype(y, np.asarray(shard).dtype, "y"))
        caches.append(ShardCache(cache, "sync", np.asarray(shard).dtype, k))
    return ys, caches


def _to_caller_dtype(a, dtype, name):
    """Cast a float32 result back to float16, refusing values that do not fit."""
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):
        out = a.astype(dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} does not fit {dtype}: its largest magnitude is {np.abs(a).max():.3g}")
    return out


def _check_cache(c, k, mode, fn):
    """A cache must be a ShardCache from the forward of the same mode."""
    want = f"{mode}_forward"
    if not isinstance(c, ShardCache):
        raise ValueError(f"caches[{k}] is {type(c).__name__}; {fn} needs the caches that {want} returned")
    if c.mode != mode:
        raise ValueError(f"caches[{k}] came from {c.mode}_forward; {fn} needs the caches that {want} returned "
                         "(the two use different statistics, so mixing them gives the gradient of neither)")


def _backward_sums(dy, c, k, comm):
    """One device's (sum dy, sum dy*xmu), or NaNs and an error text when its cache or dy is refused."""
    try:
        _check_cache(c, k, "sync", "sync_backward")
        bn = c.bn
        dy = check_dy(dy, bn.xhat.shape, bn.xhat.dtype)
        return dy, np.stack([dy.sum(axis=bn.axes), (dy * bn.xmu).sum(axis=bn.axes)]), None
    except (ValueError, TypeError) as err:
        if getattr(comm, "layout", None) is None:
            raise  # no forward has run on this communicator: there is no message shape to fail in
        C, dtype = comm.layout
        return None, np.full((2, C), np.nan, dtype), f"device {k} of {comm.K} refused its input: {err}"


def sync_backward(dys, caches, devices: Communicator):
    """SyncBatchNorm backward: one all-reduce of (sum dy, sum dy*xmu), then the compact formula per device."""
    comm = _check_comm(devices)
    _check_local_count("dys", dys, comm)
    _check_local_count("caches", caches, comm)
    results = [_backward_sums(dy, c, k, comm) for dy, c, k in zip(dys, caches, comm.local)]
    total = comm.all_reduce("sum(dy), sum(dy*xmu)", [r[1] for r in results])
    if not np.all(np.isfinite(total)):
        _raise_agreed(comm, [r[2] for r in results],
                      f"sum(dy) or sum(dy*xmu) overflowed {total.dtype} when summed over the devices")
    dxs = []
    for (dy, _, _), c in zip(results, caches):
        bn = c.bn
        shape = bn.mu.shape
        # g = gamma*dy: sum(g) = gamma*sum(dy) and sum(g*xhat) = gamma*inv_s*sum(dy*xmu), then the compact formula.
        sum_g = bn.gamma * total[0].reshape(shape)
        sum_gxhat = bn.gamma * bn.inv_s * total[1].reshape(shape)
        dx = batchnorm.compact_dx(bn.gamma * dy, sum_g, sum_gxhat, bn)
        dxs.append(_to_caller_dtype(dx, c.dtype, "dx"))
    dgamma, dbeta = _reduce_param_grads([r[0] for r in results], caches, comm)
    return dxs, dgamma, dbeta


def _reduce_param_grads(dys, caches, comm: Communicator):
    """dgamma and dbeta: each device's sums, all-reduced as any data-parallel parameter gradient is."""
    parts = [np.concatenate(batchnorm.param_grads(dy, c.bn)) for dy, c in zip(dys, caches)]
    total = comm.all_reduce("dgamma, dbeta (data parallel)", parts)
    C = total.size // 2
    return total[:C], total[C:]


def local_forward(shards, gamma, beta, eps=1e-5, ddof=0):
    """Per-device BN: each shard normalized with its own statistics, no communication."""
    if not isinstance(shards, (list, tuple)) or not shards:
        raise ValueError("shards must be a non-empty list of (N_k, C, ...) arrays, one per device")
    ys, caches = [], []
    for k, shard in enumerate(shards):
        shard = check_input(shard, f"shard {k}")
        y, cache = batchnorm.forward(shard.astype(work_dtype(shard.dtype), copy=False), gamma, beta, eps, ddof)
        ys.append(_to_caller_dtype(y, shard.dtype, "y"))
        caches.append(ShardCache(cache, "local", shard.dtype, k))
    return ys, caches


def local_backward(dys, caches, devices: Communicator):
    """Per-device BN backward: local statistics' gradients; only dgamma and dbeta are all-reduced."""
    comm = _check_comm(devices)
    _check_local_count("dys", dys, comm)
    _check_local_count("caches", caches, comm)
    for k, c in zip(comm.local, caches):
        _check_cache(c, k, "local", "local_backward")
    dys = [check_dy(dy, c.bn.xhat.shape, c.bn.xhat.dtype) for dy, c in zip(dys, caches)]
    dxs = [_to_caller_dtype(batchnorm.backward(dy, c.bn)[0], c.dtype, "dx") for dy, c in zip(dys, caches)]
    dgamma, dbeta = _reduce_param_grads(dys, caches, comm)
    return dxs, dgamma, dbeta


def data_parallel_step(x, gamma, beta, dy, K, sync: bool, eps=1e-5, ddof=0):
    """Forward and backward of BN on x split over K devices (or shards of sizes K); returns (y, dx, dgamma, dbeta, devices)."""
    shards = split_batch(x, K)
    devices = Devices(len(shards))
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
    "Communicator",
    "Devices",
    "Message",
    "ShardCache",
    "backward_message_bytes",
    "combine_stats",
    "data_parallel_step",
    "forward_message_bytes",
    "local_backward",
    "local_forward",
    "split_batch",
    "stats_record",
    "sync_backward",
    "sync_forward",
    "work_dtype",
]
