"""SyncBatchNorm on real processes: an mpi4py communicator, and a run under `mpiexec`.

    mpiexec -n 4 python -m bnbackprop.syncbn_mpi --sizes 1,6,3,5

Each process is one device. Rank k makes its own shard of `sizes[k]` samples, and all ranks run
`sync_forward` and `sync_backward` over MPI. Then each rank gathers the whole batch (for the check
only) and compares its y and dx, and the global dgamma and dbeta, with single-process batch norm on
that batch, and with the simulated `Devices` on the same shards: same bits, same messages. Rank 0
prints every rank's line in rank order. Needs the [mpi] extra (mpi4py and the mpich wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ._extras import require
from .batchnorm import backward, forward
from .syncbn import (
    Communicator,
    Devices,
    backward_message_bytes,
    forward_message_bytes,
    sync_backward,
    sync_forward,
)

# Largest error relative to the largest entry of the float64 reference, per dtype of x.
TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3}
BAD_INPUTS = ("nan", "channels", "empty", "dy-nan", "cache")
# Rank 0 ends each run of `run_many` with this line and the run's exit status.
RUN_END = "=== end of run, exit status"


def _mpi():
    """mpi4py's MPI module, or a ModuleNotFoundError that names the [mpi] extra (imported late: the module works without it)."""
    require("mpi4py", "mpi", "SyncBN over MPI (bnbackprop.syncbn_mpi)")
    from mpi4py import MPI

    return MPI


class MPIComm(Communicator):
    """One device per MPI process; collectives are MPI all-gathers of raw bytes."""

    def __init__(self, comm=None):
        self.MPI = _mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.K = self.comm.Get_size()
        self.local = (self.comm.Get_rank(),)
        self.log = []

    def _gather(self, parts) -> np.ndarray:
        # Bytes, not MPI number types: the forward's record mixes floats with an int64 count.
        (part,) = parts
        out = np.empty((self.K,) + part.shape, part.dtype)
        self.comm.Allgather([part.reshape(-1).view(np.uint8), self.MPI.BYTE],
                            [out.reshape(-1).view(np.uint8), self.MPI.BYTE])
        return out

    def _gather_objects(self, objs) -> list:
        return [o for per_rank in self.comm.allgather(objs) for o in per_rank]


def mpiexec_path() -> str | None:
    """The mpiexec beside this Python (where the mpich wheel puts it), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def missing_mpi() -> str | None:
    """Why an MPI run cannot start here, or None when it can."""
    try:
        _mpi()
    except ImportError as err:
        return str(err)
    if mpiexec_path() is None:
        return "mpiexec not found beside this Python or on PATH: pip install 'bnbackprop[mpi]'"
    return None


def run(K: int, args=(), timeout: float = 120) -> subprocess.CompletedProcess:
    """Run this module on K processes; kill the whole run if it exceeds `timeout` seconds."""
    _check_launch(K, timeout)
    return _launch(K, ["-m", "bnbackprop.syncbn_mpi", *map(str, args)], timeout)


def run_many(K: int, runs, timeout: float = 120) -> list[tuple[int, str]]:
    """Run this module once per list of arguments in `runs`, all in one launch on K processes (MPI's
    start-up and the imports, most of a short run's time, are paid once): (exit status, rank 0's
    output) per run, as `run` would give them. A run that ends the launch raises RuntimeError."""
    _check_launch(K, timeout)
    if not isinstance(runs, (list, tuple)):
        raise TypeError(f"runs must be a list of argument lists; got {type(runs).__name__}")
    for i, argv in enumerate(runs):
        if not isinstance(argv, (list, tuple)) or not all(type(v) in (str, int) for v in argv):
            raise TypeError(f"runs[{i}] must be a list of str or int arguments; got {argv!r}")
    if not runs:
        return []
    proc = _launch(K, ["-c", "import sys; from bnbackprop.syncbn_mpi import _entry_many; _entry_many(sys.argv[1])",
                       json.dumps([[str(v) for v in argv] for argv in runs])], timeout)
    parts = re.split(rf"^{re.escape(RUN_END)} (\d+)\n", proc.stdout, flags=re.M)
    done = [(int(status), out) for out, status in zip(parts[0::2], parts[1::2])]
    if len(done) != len(runs) or proc.returncode != 0 or parts[-1]:
        raise RuntimeError(f"the launch ended after {len(done)} of {len(runs)} runs (exit status {proc.returncode}):\n"
                           + parts[-1] + proc.stderr)
    return done


def _check_launch(K, timeout) -> None:
    """K: an int >= 1; timeout: a finite number of seconds > 0."""
    if type(K) is not int:
        raise TypeError(f"K must be an int >= 1 (the number of processes); got {K!r}")
    if K < 1:
        raise ValueError(f"K must be an int >= 1 (the number of processes); got {K}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds > 0; got {timeout!r}")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a finite number of seconds > 0; got {timeout}")


def _launch(K: int, tail, timeout: float) -> subprocess.CompletedProcess:
    """mpiexec -n K python *tail; kill the whole run if it exceeds `timeout` seconds or anything stops the wait."""
    reason = missing_mpi()
    if reason:
        raise RuntimeError(reason)
    cmd = [mpiexec_path(), "-n", str(K), sys.executable, *tail]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{' '.join(cmd)} did not finish in {timeout} s") from None
    finally:
        if proc.poll() is None:  # a timeout, Ctrl-C (which the new session does not pass on), any error
            os.killpg(proc.pid, signal.SIGKILL)  # mpiexec and every rank: they share the new session's group
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def parse_args(argv):
    """The run's options: shard sizes, the per-sample shape, dtype, seed, and an optional bad input."""
    p = argparse.ArgumentParser(prog="mpiexec -n K python -m bnbackprop.syncbn_mpi", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", help="samples per rank, comma-separated (default 1,2,...,K)")
    p.add_argument("--shape", default="3,4,5", help="C or C,H,W,...: one sample's shape (default 3,4,5)")
    p.add_argument("--dtype", default="float64", choices=sorted(TOLERANCE))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bad-rank", type=int, help="give this rank a bad input")
    p.add_argument("--bad", choices=BAD_INPUTS, default="nan",
                   help="which bad input (default nan; cache: the backward gets no cache)")
    p.add_argument("--time", type=int, default=0, metavar="STEPS", help="also time this many steps")
    return p.parse_args(argv)


def make_inputs(opts, rank, K):
    """This rank's shard and dy (its own random stream), and gamma, beta (the same on every rank)."""
    sizes = _int_list(opts.sizes, "--sizes", 0) if opts.sizes else list(range(1, K + 1))
    if len(sizes) != K:
        raise SystemExit(f"--sizes gives {len(sizes)} shard sizes for {K} processes")
    sample = tuple(_int_list(opts.shape, "--shape", 1))
    C, dtype = sample[0], np.dtype(opts.dtype)
    common = np.random.default_rng([opts.seed, K])
    gamma, beta = 1 + 0.5 * common.standard_normal(C), common.standard_normal(C)
    offset = 5 * common.standard_normal((1, C) + (1,) * (len(sample) - 1))
    rng = np.random.default_rng([opts.seed, K, rank])
    shard = (offset + 2 * rng.standard_normal((sizes[rank],) + sample)).astype(dtype)
    dy = rng.standard_normal(shard.shape).astype(dtype)
    if rank == opts.bad_rank:
        shard, dy = _spoil(shard, dy, opts.bad)
    return shard, dy, gamma, beta


def _int_list(text: str, option: str, least: int) -> list[int]:
    """Comma-separated ints of at least `least`, or a SystemExit that names the option (as argparse's errors do)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < least:
        raise SystemExit(f"{option} must be comma-separated integers >= {least}; got {text!r}")
    return values


def _spoil(shard, dy, how):
    """A bad input on one rank: a NaN, a wrong channel count, an empty shard, or a NaN in dy."""
    shard, dy = shard.copy(), dy.copy()
    if how == "nan":
        shard.flat[0] = np.nan
    elif how == "channels":
        shard = shard[:, :-1]
    elif how == "empty":
        shard = shard[:0]
    elif how == "dy-nan":
        dy.flat[0] = np.nan
    return shard, dy


def step(shard, dy, gamma, beta, comm, drop_cache=False):
    """One SyncBN forward and backward for this process's device (`drop_cache`: the backward gets None)."""
    (y,), caches = sync_forward([shard], gamma, beta, comm)
    (dx,), dgamma, dbeta = sync_backward([dy], [None] if drop_cache else caches, comm)
    return y, dx, dgamma, dbeta


def scaled_error(got, want) -> float:
    """Largest error relative to the largest entry of the reference."""
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-300))


def check_rank(result, comm, shard, dy, gamma, beta, dtype):
    """Compare this rank's result with one process on the gathered batch and with the simulation."""
    rank, K = comm.local[0], comm.K
    shards, dys = comm.comm.allgather(shard), comm.comm.allgather(dy)
    lo = sum(len(s) for s in shards[:rank])
    x64, dy64 = (np.concatenate(a).astype(np.float64) for a in (shards, dys))
    y_ref, cache = forward(x64, gamma, beta)
    refs = (y_ref[lo:lo + len(shard)], *(a if i else a[lo:lo + len(shard)] for i, a in enumerate(backward(dy64, cache))))
    worst = max(scaled_error(g, w) for g, w in zip(result, refs))
    sim = Devices(K)
    ys, caches = sync_forward(shards, gamma, beta, sim)
    dxs, dgamma, dbeta = sync_backward(dys, caches, sim)
    same_bits = all(np.array_equal(a, b) for a, b in zip(result, (ys[rank], dxs[rank], dgamma, dbeta)))
    same_log = sim.log == comm.log
    C = shard.shape[1]
    sizes_ok = [m.nbytes for m in comm.log] == [forward_message_bytes(C, dtype)] + [backward_message_bytes(C, dtype)] * 2
    tol = TOLERANCE[dtype.name]
    ok = worst < tol and same_bits and same_log and sizes_ok
    verdict = (f"match one process (< {tol:g}); same bits and messages as the simulation" if ok else
               f"MISMATCH: error {worst:.3g} (tolerance {tol:g}), same bits {same_bits}, same log {same_log}, "
               f"bytes as the formulas {sizes_ok}")
    return ok, f"rank {rank}: {len(shard)} sample(s); y, dx, dgamma, dbeta {verdict}"


def time_steps(steps, shard, dy, gamma, beta, comm):
    """Median wall time of one forward + backward, the slowest rank's."""
    times = []
    for _ in range(steps):
        comm.comm.Barrier()
        t0 = time.perf_counter()
        step(shard, dy, gamma, beta, MPIComm(comm.comm))
        times.append(comm.comm.allreduce(time.perf_counter() - t0, op=comm.MPI.MAX))
    return float(np.median(times))


def describe_log(log) -> list[str]:
    """One line per message: its kind, its name, and the bytes each device contributed."""
    return [f"  {m.op} of {m.name!r}: {m.nbytes} bytes per device" for m in log]


def main(argv=None) -> int:
    """Run, check, and let rank 0 print every rank's line; exit status 1 on every rank if any rank failed."""
    opts = parse_args(argv)
    comm = MPIComm()
    rank, K = comm.local[0], comm.K
    shard, dy, gamma, beta = make_inputs(opts, rank, K)
    dtype = np.dtype(opts.dtype)
    try:
        result = step(shard, dy, gamma, beta, comm, drop_cache=rank == opts.bad_rank and opts.bad == "cache")
        ok, line = check_rank(result, comm, shard, dy, gamma, beta, dtype)
    except ValueError as err:
        ok, line = False, f"rank {rank}: ValueError: {err}"
    lines = comm.comm.gather(line, root=0)
    all_ok = comm.comm.allreduce(ok, op=comm.MPI.LAND)
    sizes = comm.comm.allgather(len(shard))
    if rank == 0:
        sample = ", ".join(opts.shape.split(","))
        print(f"K = {K} MPI processes; x of shape (N, {sample}) in {dtype.name}, N = {sum(sizes)} split {sizes}")
        print("\n".join(lines))
        if all_ok:
            print("messages (identical on every rank):")
            print("\n".join(describe_log(comm.log)))
    if all_ok and opts.time:
        t = time_steps(opts.time, shard, dy, gamma, beta, comm)
        if rank == 0:
            print(f"one step (forward + backward) at K = {K}: median {t * 1e3:.2f} ms over {opts.time} steps")
    return 0 if all_ok else 1


def _entry() -> None:
    """Exit with main's status; an unexpected error aborts every rank rather than leaving the others waiting."""
    sys.exit(_abort_on_error(main))


def _entry_many(runs_json: str) -> None:
    """`run_many`'s side: main once per argument list, each run's end and exit status marked by rank 0."""
    def every_run():
        for argv in json.loads(runs_json):
            status = _status(argv)
            if _mpi().COMM_WORLD.Get_rank() == 0:
                print(f"{RUN_END} {status}", flush=True)
        return 0
    sys.exit(_abort_on_error(every_run))


def _status(argv) -> int:
    """main(argv)'s exit status, as the interpreter would give it for `python -m` (every rank gets the same
    SystemExit from the same arguments: argparse's usage errors, a bad --sizes or --shape)."""
    try:
        return main(argv)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr, flush=True)
        return 1


def _abort_on_error(body) -> int:
    """body()'s status; an unexpected error aborts every rank rather than leaving the others waiting."""
    try:
        return body()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        _mpi().COMM_WORLD.Abort(2)
    return 2  # not reached: Abort ends the process


__all__ = ["BAD_INPUTS", "MPIComm", "TOLERANCE", "main", "missing_mpi", "mpiexec_path", "run", "run_many", "step"]


if __name__ == "__main__":
    _entry()
