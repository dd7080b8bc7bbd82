"""Root pytest configuration: make nbval compare stored PNG figures too, and report skipped MPI tests loudly.

nbval skips image/png by default. Matplotlib's Agg output is byte-for-byte repeatable for one set
of versions, so comparing the PNGs proves that the figures a reader sees are current.
"""

from __future__ import annotations

import os

import pytest

MPI_SKIP = "MPI TESTS SKIPPED"


def _compare_png(items):
    """Drop image/png from the skip list of every notebook nbval collected."""
    for item in items:
        parent = getattr(item, "parent", None)
        skip = getattr(parent, "skip_compare", None)
        if skip is not None and "image/png" in skip:
            parent.skip_compare = tuple(k for k in skip if k != "image/png")


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
    """Compare stored figures; skip MPI cells where MPI is missing."""
    _compare_png(items)
    _skip_mpi_cells(items)


def pytest_terminal_summary(terminalreporter):
    """Say loudly that the MPI tests did not run: a reader may lack MPI, CI must not."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MPI_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} MPI TESTS SKIPPED: SyncBN over MPI was NOT tested. "
                                   "Install it with: pip install 'bnbackprop[mpi]' (make does)", red=True, bold=True)
