"""SyncBN on real MPI processes: `mpiexec -n K python -m bnbackprop.syncbn_mpi`, each rank checked.

Without mpi4py or mpiexec these tests are skipped, loudly (see the summary at the end of the run).
.ci/run sets BNBACKPROP_REQUIRE_MPI=1, which turns a missing MPI into a failure.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from bnbackprop.syncbn import backward_message_bytes, forward_message_bytes
from bnbackprop.syncbn_mpi import missing_mpi, run

REASON = missing_mpi()
REQUIRED = os.environ.get("BNBACKPROP_REQUIRE_MPI") == "1"
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(REASON is not None and not REQUIRED, reason=f"MPI TESTS SKIPPED: {REASON}"),
]
# A healthy run takes about 2 s; the timeout only has to end a hung one.
TIMEOUT = 90


def test_mpi_is_installed():
    assert REASON is None, REASON


@pytest.mark.parametrize("K,dtype,shape,sizes", [
    (2, "float64", "3,4,5", "1,6"),
    (2, "float32", "4", "5,1"),
    (4, "float64", "3,4,5", "1,6,3,5"),
    (4, "float32", "2,3,2", "4,1,2,7"),
    (4, "float16", "3,4,5", "2,1,3,5"),
])
def test_every_rank_matches_one_process_and_the_simulation(K, dtype, shape, sizes):
    proc = run(K, ["--dtype", dtype, "--shape", shape, "--sizes", sizes, "--seed", K], timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = re.findall(r"^rank (\d+): (\d+) sample\(s\); (.*)$", proc.stdout, re.M)
    assert [(int(r), int(n)) for r, n, _ in ranks] == list(enumerate(map(int, sizes.split(","))))
    assert all(v.startswith("y, dx, dgamma, dbeta match one process") and v.endswith("same bits and messages as the simulation")
               for _, _, v in ranks), proc.stdout
    C = int(shape.split(",")[0])
    sent = re.findall(r"^  (all-gather|all-reduce) of '(.*)': (\d+) bytes per device$", proc.stdout, re.M)
    assert sent == [("all-gather", "mean, var, count", str(forward_message_bytes(C, np.dtype(dtype)))),
                    ("all-reduce", "sum(dy), sum(dy*xmu)", str(backward_message_bytes(C, np.dtype(dtype)))),
                    ("all-reduce", "dgamma, dbeta (data parallel)", str(backward_message_bytes(C, np.dtype(dtype))))]


@pytest.mark.parametrize("K,bad_rank,bad,match", [
    (4, 2, "nan", "shard 2 must be finite"),
    (4, 1, "channels", "shard 1 has shape (2, 2, 4, 5); expected (N_k, C, ...) with C = 3"),
    (2, 0, "empty", "shard 0 has shape (0, 3, 4, 5) with an empty axis"),
    (4, 3, "dy-nan", "dy must be finite"),
    (2, 1, "cache", "caches[1] is NoneType; sync_backward needs the caches that sync_forward returned"),
])
def test_a_bad_input_on_one_rank_fails_every_rank_with_the_same_error(K, bad_rank, bad, match):
    proc = run(K, ["--bad-rank", bad_rank, "--bad", bad], timeout=TIMEOUT)
    assert proc.returncode != 0
    errors = re.findall(r"^rank (\d+): ValueError: (.*)$", proc.stdout, re.M)
    assert [int(r) for r, _ in errors] == list(range(K)), proc.stdout + proc.stderr
    assert len({e for _, e in errors}) == 1
    assert errors[0][1].startswith(f"device {bad_rank} of {K} refused its input: ") and match in errors[0][1]
