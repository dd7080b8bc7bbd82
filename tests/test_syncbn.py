"""SyncBatchNorm over simulated devices: exact agreement with one device, and the bytes it costs."""

from __future__ import annotations

import numpy as np
import pytest

from bnbackprop import backward, forward
from bnbackprop.batches import random_batch
from bnbackprop.gradcheck import rel_error
from bnbackprop.reference import autograd_backward
from bnbackprop.syncbn import Devices, data_parallel_step, local_forward, split_batch, sync_backward, sync_forward


def data(shape=(12, 5, 3, 2), seed=0):
    """x with mean 4 and spread 2, random gamma and beta, random dy."""
    return random_batch(seed, shape, 2.0, 4.0)


@pytest.mark.parametrize("K", [1, 2, 3, 5, 12])
@pytest.mark.parametrize("ddof", [0, 1])
def test_sync_matches_one_device(K, ddof):
    x, gamma, beta, dy = data()
    y, dx, dgamma, dbeta, _ = data_parallel_step(x, gamma, beta, dy, K, sync=True, ddof=ddof)
    y0, cache = forward(x, gamma, beta, ddof=ddof)
    for got, want in zip((y, dx, dgamma, dbeta), (y0, *backward(dy, cache))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_sync_matches_autograd_on_2d_input():
    x, gamma, beta, dy = data(shape=(10, 4))
    _, dx, dgamma, dbeta, _ = data_parallel_step(x, gamma, beta, dy, 3, sync=True)
    for got, want in zip((dx, dgamma, dbeta), autograd_backward(dy, x, gamma, beta)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_per_device_bn_gives_a_different_gradient():
    x, gamma, beta, dy = data()
    dx_sync = data_parallel_step(x, gamma, beta, dy, 4, sync=True)[1]
    dx_local = data_parallel_step(x, gamma, beta, dy, 4, sync=False)[1]
    assert rel_error(dx_local, dx_sync) > 0.1
    # Each device's piece is still the exact gradient of its own shard's batch norm.
    shards = split_batch(x, 4)
    np.testing.assert_allclose(dx_local[:3], autograd_backward(dy[:3], shards[0], gamma, beta)[0], rtol=1e-9, atol=1e-12)


def test_per_device_sums_are_zero_only_per_shard():
    x, gamma, beta, dy = data()
    dx_local = data_parallel_step(x, gamma, beta, dy, 4, sync=False)[1]
    dx_sync = data_parallel_step(x, gamma, beta, dy, 4, sync=True)[1]
    np.testing.assert_allclose(dx_local[:3].sum(axis=(0, 2, 3)), 0, atol=1e-12)
    assert np.abs(dx_sync[:3].sum(axis=(0, 2, 3))).max() > 1e-3
    np.testing.assert_allclose(dx_sync.sum(axis=(0, 2, 3)), 0, atol=1e-12)


def test_bytes_counted_per_all_reduce():
    x, gamma, beta, dy = data()
    C, K = 5, 4
    sync = data_parallel_step(x, gamma, beta, dy, K, sync=True)[4]
    local = data_parallel_step(x, gamma, beta, dy, K, sync=False)[4]
    assert [m.name for m in sync.log] == ["sum(x), count", "sum(xmu**2)", "sum(g)", "sum(g*xhat)", "dgamma, dbeta (data parallel)"]
    assert sync.bytes_per_device() == 8 * ((C + 1) + C + C + C + 2 * C)
    assert local.bytes_per_device() == 8 * 2 * C
    assert sync.ring_bytes_per_device() == 2 * (K - 1) / K * sync.bytes_per_device()


def test_sync_allows_one_sample_per_device():
    x, gamma, beta, dy = data(shape=(4, 3))
    dx = data_parallel_step(x, gamma, beta, dy, 4, sync=True)[1]
    np.testing.assert_allclose(dx, backward(dy, forward(x, gamma, beta)[1])[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        data_parallel_step(x, gamma, beta, dy, 4, sync=False)


def test_sync_forward_handles_uneven_shards_and_float32():
    x, gamma, beta, dy = data(shape=(7, 3, 2))
    devices = Devices(3)
    ys, caches = sync_forward(split_batch(x.astype(np.float32), 3), gamma, beta, devices)
    assert [len(y) for y in ys] == [3, 2, 2] and ys[0].dtype == np.float32
    np.testing.assert_allclose(np.concatenate(ys), forward(x, gamma, beta)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda x, g, b: Devices(0), "positive integer"),
    (lambda x, g, b: split_batch(x, 13), "K <= N"),
    (lambda x, g, b: Devices(2).all_reduce("s", [np.ones(2)]), "2 arrays"),
    (lambda x, g, b: sync_forward([x[:3], x[3:, :2]], g, b, Devices(2)), "same C"),
    (lambda x, g, b: sync_forward(split_batch(x, 2), g[:2], b, Devices(2)), "gamma has shape"),
    (lambda x, g, b: sync_backward([np.ones(3)], sync_forward(split_batch(x, 2), g, b, Devices(2))[1], Devices(2)), "one dy per device"),
    (lambda x, g, b: local_forward([], g, b), "non-empty"),
    (lambda x, g, b: data_parallel_step(x, g, b, np.ones(3), 2, sync=True), "dy has shape"),
])
def test_bad_input_gets_a_clear_value_error(call, match):
    x, gamma, beta, _ = data()
    with pytest.raises(ValueError, match=match):
        call(x, gamma, beta)


def test_sync_refuses_eps_zero_with_a_constant_channel_like_one_device():
    x = np.random.default_rng(61).normal(2.0, 1.0, (8, 3))
    x[:, 1] = 0.7
    with pytest.raises(ValueError, match="eps = 0 with a channel of zero variance"):
        sync_forward(split_batch(x, 2), np.ones(3), np.zeros(3), Devices(2), eps=0.0)
    with pytest.raises(ValueError, match="eps = 0 with a channel of zero variance"):
        forward(x, np.ones(3), np.zeros(3), eps=0.0)
