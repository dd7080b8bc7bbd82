"""Root pytest configuration: how nbval checks the notebooks (see the README, "How the stored outputs stay
current"), and MPI tests reported loudly when skipped.

- Figures: nbval skips image/png by default; here every stored PNG is compared with the new one pixel by
  pixel, within tests/notebook_checks.FIGURE_TOLERANCE levels per channel, so a last-bit change in the
  data passes and a visible change fails.
- A second numeric environment: every notebook is collected twice. `book/X.ipynb` runs as the machine
  is set up; `book/X.ipynb[second_env]` runs in a kernel started with numpy's SIMD groups above its
  baseline disabled, numba compiled for a generic CPU and BLAS on another thread count
  (tests/notebook_checks.second_env). Both must reproduce the stored outputs.
- Kernels: on Linux each notebook's kernel is forked from a server that has imported the kernel and the
  chapters' common libraries once per worker and environment (tests/fork_kernels.py, which lists what
  still differs from a launched kernel; about 0.6 s of CPU saved per notebook run);
  BNBACKPROP_FORK_KERNELS=0, or another system, starts them the usual way.
- Cells tagged `mpi` launch mpiexec: without MPI they are skipped as the MPI tests are, and the
  summary says so in red.
- Scheduling (pytest-xdist, `--dist loadfile`): the test files that compile the numba kernels run as one
  unit on one worker, so that on a fresh checkout each kernel compiles once (the others load numba's
  cache) instead of once per worker; units start longest first (UNIT_SECONDS); `-n auto` starts one
  worker more than xdist would (one per core), because workers spend part of their time waiting on a
  kernel, mpiexec or a sleeping child process.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import types
from functools import lru_cache
from unittest import mock

import nbval.kernel
import pytest
from nbval.plugin import IPyNbCell, IPyNbFile
from xdist.plugin import pytest_xdist_auto_num_workers as xdist_auto_num_workers
from xdist.scheduler import LoadFileScheduling

from tests import fork_kernels
from tests.notebook_checks import figure_difference, second_env

SECOND_ENV = "second_env"
MPI_SKIP = "MPI TESTS SKIPPED"
# Test files whose first calls compile bnbackprop.fast's kernels (about 20 s of CPU on a fresh checkout).
NUMBA_FILES = frozenset(f"tests/{name}.py" for name in ("test_fast", "test_fast_forward", "test_fast_streaming",
                                                      "test_edges", "test_edges_property"))


@lru_cache(maxsize=1)
def _second_env() -> dict[str, str]:
    """Computed once per process, from what numpy and BLAS report on this machine."""
    return second_env()


class SecondEnvNotebook(IPyNbFile):
    """A notebook whose kernel starts in the second numeric environment."""

    def setup(self):
        with mock.patch.dict(os.environ, _second_env()):
            super().setup()  # starts the kernel, which copies os.environ


def pytest_configure(config):
    """Start notebook kernels by fork from a preloaded server (tests/fork_kernels.py) where that works."""
    if fork_kernels.enabled():
        nbval.kernel.KernelManager = fork_kernels.ForkingKernelManager


def pytest_unconfigure(config):
    fork_kernels.close_servers()
    if hasattr(config, "workerinput"):  # an xdist worker: every result is sent, its kernels and servers ended
        atexit.register(_exit_without_teardown)


def _exit_without_teardown() -> None:
    """Run the other exit hooks, then leave without tearing the interpreter down."""
    # Registered last, so it runs first. Tearing down a worker's heap of frozen objects and numba's code took
    # over a second, and the controller reports only once every worker has exited. The other hooks (coverage's
    # data file, temporary directories, logging) still run, before the exit.
    atexit.unregister(_exit_without_teardown)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def freeze_heap() -> None:
    """Collect, then move every object still alive into the collector's permanent generation (gc.freeze)."""
    # A full collection visits every tracked object: a worker holds hundreds of thousands after its imports,
    # and numba's compiler leaves as many again (in one run before this, the three workers spent 14 s of CPU
    # collecting, 7 s of it in one worker's 23 full collections). Frozen objects are still freed when nothing
    # refers to them; frozen reference cycles are not, and gc.get_objects() no longer lists frozen objects.
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session):
    """The imports and the collected tests stay for the whole session: freeze them."""
    freeze_heap()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After each file's last test, once pytest has dropped its fixtures, freeze what the file left behind."""
    result = yield
    # Not after the last test (the worker exits), nor once a test has failed: a failure's traceback (kept in
    # sys.last_value) holds the test's frames in cycles, which would never be freed if frozen.
    if nextitem is not None and getattr(sys, "last_value", None) is None \
            and item.getparent(pytest.File) is not nextitem.getparent(pytest.File):
        freeze_heap()
    return result


def pytest_collect_file(file_path, parent):
    """Collect every notebook a second time (nbval collects the first) under its own node id."""
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and file_path.suffix == ".ipynb":
        nodeid = f"{file_path.relative_to(parent.config.rootpath).as_posix()}[{SECOND_ENV}]"
        return SecondEnvNotebook.from_parent(parent, path=file_path, name=f"{file_path.name}[{SECOND_ENV}]",
                                             nodeid=nodeid)
    return None


def compare_outputs(self, test, ref, skip_compare=None):
    """nbval's comparison (which skips image/png), then every PNG within the pixel tolerance."""
    if not IPyNbCell.compare_outputs(self, test, ref, skip_compare):
        return False
    pngs = [[o["data"]["image/png"] for o in outs if "image/png" in o.get("data", {})] for outs in (ref, test)]
    if len(pngs[0]) != len(pngs[1]):
        self.comparison_traceback.append(f"{len(pngs[0])} stored figure(s), {len(pngs[1])} new")
        return False
    for k, (stored, new) in enumerate(zip(*pngs)):
        why = figure_difference(stored, new)
        if why is not None:
            self.comparison_traceback.append(f"figure {k + 1} of the cell: {why}")
            return False
    return True


def _skip_mpi_cells(items):
    """Chapter cells tagged `mpi` launch mpiexec: without MPI, skip them as the MPI tests are skipped."""
    cells = [i for i in items if "mpi" in getattr(getattr(i, "cell", None), "metadata", {}).get("tags", [])]
    if not cells or os.environ.get("BNBACKPROP_REQUIRE_MPI") == "1":
        return
    from bnbackprop.syncbn_mpi import missing_mpi

    reason = missing_mpi()
    for item in cells if reason else []:
        item.add_marker(pytest.mark.skip(reason=f"{MPI_SKIP}: {reason}"))


def pytest_collection_modifyitems(session, config, items):
    """Give every nbval cell the tolerant figure comparison; skip MPI cells where MPI is missing."""
    for item in items:
        if isinstance(item, IPyNbCell):
            item.compare_outputs = types.MethodType(compare_outputs, item)
    _skip_mpi_cells(items)


def pytest_terminal_summary(terminalreporter):
    """Say loudly that the MPI tests did not run: a reader may lack MPI, CI must not."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MPI_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} MPI TESTS SKIPPED: SyncBN over MPI was NOT tested. "
                                   "Install it with: pip install 'bnbackprop[mpi]' (make does)", red=True, bold=True)


def compile_fast_kernels() -> dict[str, int]:
    """Compile bnbackprop.fast's kernels (both dtypes, 1 and 2 threads) in a new thread; their signature counts."""
    # CPython (3.11 here) unmaps a chunk of its frame stack as soon as the frame that opened it returns. At a
    # test's depth under xdist, numba's compiler kept crossing such a boundary: on a fresh checkout the
    # NUMBA_FILES on one worker made 570,000 mmap calls (40,000 when compiled here first). In a standalone
    # timing the same compiles took 17.1 s of CPU at a depth of 40 frames and 14.1 s in a new thread, whose
    # frame stack starts empty. The tests then call the same compiled code.
    import threading

    import numpy as np

    from bnbackprop import fast

    thread_counts = sorted({1, min(2, fast.numba.config.NUMBA_NUM_THREADS)})

    def compile_all():
        rng = np.random.default_rng(0)
        for dtype in (np.float64, np.float32):
            rows = fast.PARALLEL_MIN_BYTES // (64 * np.dtype(dtype).itemsize) + 1  # two threads need this size
            x = (1 + rng.standard_normal((rows, 64))).astype(dtype)
            gamma, beta = rng.uniform(0.5, 2, 64).astype(dtype), rng.standard_normal(64).astype(dtype)
            _, cache = fast.forward_fast(x, gamma, beta)
            for threads in thread_counts:
                fast.backward_fast(x, cache, threads=threads)
            gc.collect()  # the collector is paused (below): free one dtype's compiler objects before the next

    errors = []
    thread = threading.Thread(target=_record_errors, args=(compile_all, errors), name="compile-kernels", daemon=True)
    was_enabled = gc.isenabled()
    gc.disable()  # numba's compiler makes objects by the million: one collection per dtype, not dozens
    try:
        thread.start()
        thread.join()
    finally:
        if was_enabled:
            gc.enable()
    if errors:
        raise errors[0]
    freeze_heap()
    return {name: len(getattr(fast, name).signatures) for name in ("_forward_jit", "_backward_jit", "_backward_par")}


def _record_errors(job, errors: list) -> None:
    """Run job(); keep what it raises for the thread that waits on it."""
    try:
        job()
    except BaseException as exc:  # noqa: BLE001 - re-raised by compile_fast_kernels
        errors.append(exc)


@pytest.fixture(scope="session")
def fast_kernels_compiled() -> dict[str, int]:
    """compile_fast_kernels, once per worker: the signature counts it left."""
    return compile_fast_kernels()


@pytest.fixture(autouse=True)
def _numba_files_compile_first(request):
    """The NUMBA_FILES find the kernels compiled (compile_fast_kernels)."""
    if request.node.nodeid.split("::")[0] in NUMBA_FILES:
        request.getfixturevalue("fast_kernels_compiled")


NUMBA_UNIT = "numba kernels"
# Seconds of CPU of the units that take longest, from a clean run on the 2-core test machine (numba compiling
# included). Units start longest first, so that the last ones to finish are short (a stale figure changes the
# order, never the outcome). A notebook not listed counts NOTEBOOK_SECONDS, a test file TEST_FILE_SECONDS.
UNIT_SECONDS = {
    NUMBA_UNIT: 35, "tests/test_grader.py": 8, "book/11_speed.ipynb[second_env]": 7, "tests/test_grader_isolation.py": 7,
    "tests/test_widget_base.py": 6, "tests/test_book.py": 6, "tests/test_notebook_checks.py": 6,
    "book/12_check_your_backward.ipynb": 5, "book/12_check_your_backward.ipynb[second_env]": 5,
    "book/08_syncbn.ipynb": 5, "book/08_syncbn.ipynb[second_env]": 5, "tests/test_fork_kernels.py": 3,
}
NOTEBOOK_SECONDS, TEST_FILE_SECONDS = 3, 1


def unit_seconds(scope: str) -> float:
    """The expected CPU time of a unit: UNIT_SECONDS, else the default for a notebook or a test file."""
    return UNIT_SECONDS.get(scope, NOTEBOOK_SECONDS if ".ipynb" in scope else TEST_FILE_SECONDS)


class CompileOnceScheduling(LoadFileScheduling):
    """xdist's loadfile, except that the NUMBA_FILES form one unit (one worker compiles, in turn) and units
    start longest first (UNIT_SECONDS), so that no worker is left with a long one at the end."""

    _ordered = False

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        return NUMBA_UNIT if scope in NUMBA_FILES else scope

    def _assign_work_unit(self, node) -> None:
        if not self._ordered:  # the queue is complete before the first unit is handed out
            units = sorted(self.workqueue.items(), key=lambda item: -unit_seconds(item[0]))  # stable: ties keep xdist's order
            self.workqueue.clear()
            self.workqueue.update(units)
            self._ordered = True
        super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)  # xdist's hooks: without xdist (-p no:xdist) they are never called
def pytest_xdist_make_scheduler(config, log):
    """Our scheduler where the run asks for loadfile (pyproject's addopts); xdist's own otherwise."""
    return CompileOnceScheduling(config, log) if config.getoption("dist") == "loadfile" else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """-n auto: one worker more than xdist's own choice (its count of physical cores); -n logical and
    PYTEST_XDIST_AUTO_NUM_WORKERS are left to xdist."""
    if config.option.numprocesses != "auto" or os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return xdist_auto_num_workers(config) + 1
