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

import os
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
