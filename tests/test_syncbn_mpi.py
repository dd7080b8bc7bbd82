"""SyncBN on real MPI processes: `mpiexec -n K python -m bnbackprop.syncbn_mpi`, each rank checked.

The cases for each K run in one launch (`run_many`): MPI's start-up and the imports are most of a short
run's time. One refused input also goes through the command itself (`run`), exit status included; the
command's success path runs in chapter 8 (its cells assert the exit status and every rank's line).

Without mpi4py or mpiexec these tests are skipped, loudly (see the summary at the end of the run).
.ci/run sets BNBACKPROP_REQUIRE_MPI=1, which turns a missing MPI into a failure.
"""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import pytest

from bnbackprop.syncbn import backward_message_bytes, forward_message_bytes
from bnbackprop.syncbn_mpi import missing_mpi, run, run_many

REASON = missing_mpi()
REQUIRED = os.environ.get("BNBACKPROP_REQUIRE_MPI") == "1"
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(REASON is not None and not REQUIRED, reason=f"MPI TESTS SKIPPED: {REASON}"),
]
# A healthy launch takes a few seconds; the timeout only has to end a hung one.
TIMEOUT = 90
GOOD = [
    (2, "float64", "3,4,5", "1,6"),
    (2, "float32", "4", "5,1"),
    (4, "float64", "3,4,5", "1,6,3,5"),
    (4, "float32", "2,3,2", "4,1,2,7"),
    (4, "float16", "3,4,5", "2,1,3,5"),
]
BAD = [
    (4, 2, "nan", "shard 2 must be finite"),
    (4, 1, "channels", "shard 1 has shape (2, 2, 4, 5); expected (N_k, C, ...) with C = 3"),
    (2, 0, "empty", "shard 0 has shape (0, 3, 4, 5) with an empty axis"),
    (4, 3, "dy-nan", "dy must be finite"),
    (2, 1, "cache", "caches[1] is NoneType; sync_backward needs the caches that sync_forward returned"),
]


def good_args(K, dtype, shape, sizes):
    return ["--dtype", dtype, "--shape", shape, "--sizes", sizes, "--seed", str(K)]


def bad_args(bad_rank, bad):
    return ["--bad-rank", str(bad_rank), "--bad", bad]


# Runs that end in SystemExit, as `python -m` would end them: argparse's usage error (2), a bad --sizes or --shape (1).
EXITS = [(["--dtype", "float8"], 2), (["--sizes", "1,2,3"], 1), (["--sizes=-1,3"], 1), (["--shape", "3,x"], 1)]


@functools.cache
def launch(K):
    """Every case for K in one launch: {arguments: (exit status, rank 0's output)}, or the launch's error
    (kept, so that the other tests of a failed or hung launch fail at once instead of starting it again)."""
    runs = [good_args(*case) for case in GOOD if case[0] == K] + [bad_args(*case[1:3]) for case in BAD if case[0] == K]
    runs += [argv for argv, _ in EXITS] if K == 2 else []
    try:
        return dict(zip(map(tuple, runs), run_many(K, runs, timeout=TIMEOUT)))
    except Exception as err:  # noqa: BLE001 - handed to every test of this K
        return err


def result(K, argv):
    """(exit status, rank 0's output) of one run of K's launch."""
    done = launch(K)
    if isinstance(done, Exception):
        raise done
    return done[tuple(argv)]


def test_mpi_is_installed():
    assert REASON is None, REASON


@pytest.mark.parametrize("K,dtype,shape,sizes", GOOD)
def test_every_rank_matches_one_process_and_the_simulation(K, dtype, shape, sizes):
    status, out = result(K, good_args(K, dtype, shape, sizes))
    assert status == 0, out
    ranks = re.findall(r"^rank (\d+): (\d+) sample\(s\); (.*)$", out, re.M)
    assert [(int(r), int(n)) for r, n, _ in ranks] == list(enumerate(map(int, sizes.split(","))))
    assert all(v.startswith("y, dx, dgamma, dbeta match one process") and v.endswith("same bits and messages as the simulation")
               for _, _, v in ranks), out
    C = int(shape.split(",")[0])
    sent = re.findall(r"^  (all-gather|all-reduce) of '(.*)': (\d+) bytes per device$", out, re.M)
    assert sent == [("all-gather", "mean, var, count", str(forward_message_bytes(C, np.dtype(dtype)))),
                    ("all-reduce", "sum(dy), sum(dy*xmu)", str(backward_message_bytes(C, np.dtype(dtype)))),
                    ("all-reduce", "dgamma, dbeta (data parallel)", str(backward_message_bytes(C, np.dtype(dtype))))]


@pytest.mark.parametrize("K,bad_rank,bad,match", BAD)
def test_a_bad_input_on_one_rank_fails_every_rank_with_the_same_error(K, bad_rank, bad, match):
    status, out = result(K, bad_args(bad_rank, bad))
    assert status == 1
    check_same_error_on_every_rank(out, K, bad_rank, match)


def check_same_error_on_every_rank(out, K, bad_rank, match):
    errors = re.findall(r"^rank (\d+): ValueError: (.*)$", out, re.M)
    assert [int(r) for r, _ in errors] == list(range(K)), out
    assert len({e for _, e in errors}) == 1
    assert errors[0][1].startswith(f"device {bad_rank} of {K} refused its input: ") and match in errors[0][1]


def test_the_command_itself_exits_1_when_a_rank_refuses_its_input():
    K, bad_rank, bad, match = BAD[-1]
    proc = run(K, bad_args(bad_rank, bad), timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    check_same_error_on_every_rank(proc.stdout, K, bad_rank, match)
    assert result(K, bad_args(bad_rank, bad)) == (1, proc.stdout)  # run_many gives what the command gives


@pytest.mark.parametrize(("argv", "status"), EXITS)
def test_a_run_that_exits_gives_the_status_python_would_and_the_launch_goes_on(argv, status):
    assert result(2, argv) == (status, "")  # nothing on rank 0's stdout; each of these runs follows one that exited
