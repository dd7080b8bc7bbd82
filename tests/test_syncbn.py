"""SyncBatchNorm over simulated devices: exact agreement with one device, and the bytes it costs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bnbackprop.batchnorm import backward, forward
from bnbackprop.batches import random_batch
from bnbackprop.gradcheck import rel_error
from bnbackprop.reference import autograd_backward
from bnbackprop import syncbn_mpi
from bnbackprop.syncbn_mpi import RUN_END, run, run_many
from bnbackprop.syncbn import (
    Devices,
    backward_message_bytes,
    combine_stats,
    data_parallel_step,
    forward_message_bytes,
    local_forward,
    split_batch,
    sync_backward,
    sync_forward,
)


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


@pytest.mark.parametrize("seed", range(6))
def test_messages_and_bytes_follow_the_formulas(seed):
    rng = np.random.default_rng(seed)
    C, K = int(rng.integers(1, 9)), int(rng.integers(1, 6))
    dtype = [np.float16, np.float32, np.float64, np.longdouble][seed % 4]
    shape = (int(rng.integers(max(K, 2), 3 * K + 1)), C) + tuple(rng.integers(1, 4, seed % 3))
    x, gamma, beta, dy = data(shape, seed)
    sync = data_parallel_step(x.astype(dtype), gamma, beta, dy.astype(dtype), K, sync=True)[4]
    local = data_parallel_step(x.astype(dtype), gamma, beta, dy.astype(dtype), K, sync=False)[4]
    grads = backward_message_bytes(C, dtype)  # dgamma and dbeta: 2C numbers, like the backward's two sums
    assert [(m.op, m.name, m.nbytes) for m in sync.log] == [
        ("all-gather", "mean, var, count", forward_message_bytes(C, dtype)),
        ("all-reduce", "sum(dy), sum(dy*xmu)", backward_message_bytes(C, dtype)),
        ("all-reduce", "dgamma, dbeta (data parallel)", grads)]
    assert [(m.op, m.name, m.nbytes) for m in local.log] == [("all-reduce", "dgamma, dbeta (data parallel)", grads)]
    # The formulas of chapter 8, in numbers: 2C values and an int64 count, then 2C values.
    itemsize = 4 if dtype == np.float16 else np.dtype(dtype).itemsize
    assert forward_message_bytes(C, dtype) == 2 * C * itemsize + 8 and backward_message_bytes(C, dtype) == 2 * C * itemsize


@pytest.mark.parametrize("seed", range(20))
def test_chan_combination_matches_one_pass_over_the_batch(seed):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-4, 4)
    offset = scale * 10.0 ** rng.integers(-2, 7)
    sizes = list(rng.integers(1, 9, rng.integers(1, 7)))
    x = offset + scale * rng.standard_normal((sum(sizes), 3))
    shards = split_batch(x, sizes)
    means = [s.mean(axis=0) for s in shards]
    variances = [s.var(axis=0) for s in shards]
    mean, m2, n = combine_stats(means, variances, sizes)
    assert n == len(x)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-14, atol=0)
    # Both carry the data's own conditioning: rounding x near the offset moves x - mean by eps * offset.
    np.testing.assert_allclose(m2, ((x - x.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-14 * (1 + offset / scale), atol=0)


@pytest.mark.parametrize("seed", range(12))
def test_sync_matches_one_device_on_unequal_shards(seed):
    rng = np.random.default_rng(100 + seed)
    sizes = [1] + list(rng.integers(1, 6, rng.integers(1, 5)))  # a shard of one, and at least one more
    rng.shuffle(sizes)
    shape = (sum(sizes), int(rng.integers(1, 5))) + tuple(rng.integers(1, 4, seed % 3))
    eps, ddof = [1e-5, 0.3, 0.0][seed % 3], seed % 2
    x, gamma, beta, dy = data(shape, seed)
    scale = 10.0 ** rng.integers(-3, 4)
    x = scale * (x + rng.uniform(-10, 10))  # offsets up to 10 standard deviations: large offsets are Chan's test
    y, dx, dgamma, dbeta, _ = data_parallel_step(x, gamma, beta, dy, [int(n) for n in sizes], sync=True, eps=eps, ddof=ddof)
    y0, cache = forward(x, gamma, beta, eps=eps, ddof=ddof)
    for got, want in zip((y, dx, dgamma, dbeta), (y0, *backward(dy, cache))):
        assert rel_error(got, want) < 1e-12 or np.abs(got - want).max() < 1e-12 * np.abs(want).max()


def test_float16_counts_travel_as_integers_and_statistics_accumulate_in_float32():
    # 2 x 1 x 200 x 200: 80 000 values per channel, more than float16's largest number 65504.
    rng = np.random.default_rng(13)
    x = rng.normal(3.0, 6.0, (2, 1, 200, 200)).astype(np.float16)
    dy = rng.standard_normal(x.shape).astype(np.float16)
    y, dx, dgamma, dbeta, log = data_parallel_step(x, [1.5], [0.5], dy, 2, sync=True)
    y64, cache = forward(x.astype(np.float64), [1.5], [0.5])
    dx64, dgamma64, dbeta64 = backward(dy.astype(np.float64), cache)
    assert y.dtype == dx.dtype == np.float16 and dgamma.dtype == dbeta.dtype == np.float32
    assert np.abs(y - y64).max() < 2e-3 * np.abs(y64).max()
    assert np.abs(dx - dx64).max() < 2e-3 * np.abs(dx64).max()
    np.testing.assert_allclose(dgamma, dgamma64, rtol=1e-4)
    np.testing.assert_allclose(dbeta, dbeta64, rtol=1e-4, atol=1e-2)


def test_float16_variance_does_not_overflow():
    # Std 300: the sum of squares is far above 65504, where float16 sums would give y = beta.
    x, gamma, beta, dy = data((32, 2, 8, 8), 5)
    x16 = (300 * x).astype(np.float16)
    y = data_parallel_step(x16, gamma, beta, dy.astype(np.float16), 4, sync=True)[0]
    y64 = forward(x16.astype(np.float64), gamma, beta)[0]
    assert np.abs(y - y64).max() < 2e-3 * np.abs(y64).max()


def test_sync_backward_refuses_caches_from_local_forward():
    x, gamma, beta, dy = data()
    shards = split_batch(x, 2)
    _, caches = local_forward(shards, gamma, beta)
    with pytest.raises(ValueError, match=r"caches\[0\] came from local_forward; sync_backward needs the caches that sync_forward"):
        sync_backward(np.split(dy, 2), caches, Devices(2))


def test_sync_backward_with_missing_caches_is_a_value_error():
    x, gamma, beta, dy = data()
    with pytest.raises(ValueError, match=r"caches\[0\] is NoneType; sync_backward needs the caches that sync_forward returned"):
        sync_backward(np.split(dy, 2), [None, None], Devices(2))


@pytest.mark.parametrize("bad", ["nan", "channels", "empty"])
def test_one_bad_shard_makes_every_device_raise_the_same_error(bad):
    x, gamma, beta, _ = data()
    shards = split_batch(x, 3)
    shards[1] = {"nan": np.where(shards[1] > 4, np.nan, shards[1]), "channels": shards[1][:, :2], "empty": shards[1][:0]}[bad]
    devices = Devices(3)
    with pytest.raises(ValueError, match="^device 1 of 3 refused its input: shard 1 "):
        sync_forward(shards, gamma, beta, devices)
    # One all-gather told every device to stop; no statistics were used.
    assert [m.op for m in devices.log] == ["all-gather"]


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
    (lambda x, g, b: split_batch(x, [5, 6]), "add up to N = 12"),
    (lambda x, g, b: Devices(2).all_reduce("s", [np.ones(2)]), "need 2 arrays"),
    (lambda x, g, b: sync_forward([x[:3], x[3:, :2]], g, b, Devices(2)), "expected .N_k, C, .... with C = 5"),
    (lambda x, g, b: sync_forward(split_batch(x, 2), g, b[:2], Devices(2)), "beta has shape"),
    (lambda x, g, b: sync_forward(split_batch(x, 2), g, b, Devices(3)), "one entry per local device .3.; got 2"),
    (lambda x, g, b: sync_forward(split_batch(x, 2), g, b, "cluster"), "Communicator"),
    (lambda x, g, b: sync_backward([np.ones(3)], sync_forward(split_batch(x, 2), g, b, Devices(2))[1], Devices(2)), "dys must be a list with one entry per local device"),
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


def test_without_mpi4py_the_mpi_module_imports_and_names_the_extra(monkeypatch):
    from bnbackprop import syncbn_mpi

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    assert "pip install 'bnbackprop[mpi]'" in syncbn_mpi.missing_mpi()
    with pytest.raises(RuntimeError, match=r"bnbackprop\[mpi\]"):
        syncbn_mpi.run(2)


def test_a_bad_cache_on_one_device_makes_every_device_raise_after_the_message():
    x, gamma, beta, dy = data()
    devices = Devices(3)
    _, caches = sync_forward(split_batch(x, 3), gamma, beta, devices)
    with pytest.raises(ValueError, match=r"^device 2 of 3 refused its input: caches\[2\] is NoneType"):
        sync_backward(split_batch(dy, 3), caches[:2] + [None], devices)
    # The backward's message went out, so devices waiting in it on other processes are released.
    assert [m.op for m in devices.log] == ["all-gather", "all-reduce"]


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: run_many(0, []), ValueError, r"K must be an int >= 1 \(the number of processes\); got 0"),
    (lambda: run_many("2", []), TypeError, "K must be an int >= 1"),
    (lambda: run_many(True, []), TypeError, "K must be an int >= 1"),
    (lambda: run_many(2, "--bad nan"), TypeError, "runs must be a list of argument lists; got str"),
    (lambda: run_many(2, [["--seed", 1.5]]), TypeError, r"runs\[0\] must be a list of str or int arguments"),
    (lambda: run_many(2, [["--seed", "1"], ["--seed", True]]), TypeError, r"runs\[1\] must be a list of str or int"),
    (lambda: run_many(2, [], timeout="5"), TypeError, "timeout must be a number of seconds > 0; got '5'"),
    (lambda: run_many(2, [], timeout=float("nan")), ValueError, "timeout must be a finite number of seconds > 0"),
    (lambda: run_many(2, [], timeout=-1), ValueError, "timeout must be a finite number of seconds > 0; got -1"),
    (lambda: run(2, timeout=0), ValueError, "timeout must be a finite number of seconds > 0; got 0"),
    (lambda: run(1.0), TypeError, "K must be an int >= 1"),
])
def test_mpi_launchers_refuse_bad_arguments_by_name_before_starting_anything(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_run_many_with_no_runs_starts_nothing():
    assert run_many(3, []) == []


def test_a_run_that_ends_the_launch_is_an_error_that_says_so(monkeypatch):
    # A launch that dies in its second run: one end-of-run line, then MPI's abort (no MPI needed to check the reading).
    died = subprocess.CompletedProcess([], 134, f"first run's output\n{RUN_END} 0\npartial\n", "Abort(2)\n")
    monkeypatch.setattr(syncbn_mpi, "_launch", lambda *args: died)
    with pytest.raises(RuntimeError, match=r"(?s)the launch ended after 1 of 2 runs \(exit status 134\):\npartial\nAbort"):
        run_many(2, [["--seed", "1"], ["--seed", "2"]])


@pytest.mark.parametrize("stdout, returncode", [(f"{RUN_END} 0\n{RUN_END} 1\n", 1), (f"{RUN_END} 0\n{RUN_END} 1\nstray\n", 0)])
def test_an_error_after_the_last_run_is_not_hidden(monkeypatch, stdout, returncode):
    monkeypatch.setattr(syncbn_mpi, "_launch", lambda *args: subprocess.CompletedProcess([], returncode, stdout, ""))
    with pytest.raises(RuntimeError, match="the launch ended after 2 of 2 runs"):
        run_many(2, [["--seed", "1"], ["--seed", "2"]])
