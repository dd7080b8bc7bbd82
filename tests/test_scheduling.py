"""How `make test` spreads its work (root conftest.py): the numba files as one unit, one worker per core plus one."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
root_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(root_conftest)


def scope(nodeid: str) -> str:
    """The work unit the scheduler puts nodeid in (the method needs no scheduler state)."""
    return root_conftest.CompileOnceScheduling._split_scope(object.__new__(root_conftest.CompileOnceScheduling), nodeid)


def test_the_numba_files_share_one_unit_and_every_other_file_is_its_own():
    numba = {scope(f"{f}::test_x[1-2]") for f in root_conftest.NUMBA_FILES}
    assert len(numba) == 1 and len(root_conftest.NUMBA_FILES) == 5
    others = ["tests/test_grader.py::test_x", "book/11_speed.ipynb::Cell 3", "book/11_speed.ipynb[second_env]::Cell 3"]
    assert [scope(n) for n in others] == ["tests/test_grader.py", "book/11_speed.ipynb", "book/11_speed.ipynb[second_env]"]
    assert numba.isdisjoint(scope(n) for n in others)


def test_every_test_file_that_runs_the_numba_kernels_is_in_the_unit():
    # A new file calling bnbackprop.fast outside the unit would compile the kernels on a second worker.
    uses = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")
            if p.name != Path(__file__).name and re.search(r"\b(backward_fast|forward_fast|from bnbackprop\.fast import|bnbackprop import fast)\b", p.read_text())}
    assert uses == root_conftest.NUMBA_FILES
    assert all((ROOT / f).is_file() for f in root_conftest.NUMBA_FILES)


def test_auto_starts_one_worker_more_than_there_are_cores(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert root_conftest.pytest_xdist_auto_num_workers(None) == cores + 1
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    assert root_conftest.pytest_xdist_auto_num_workers(None) is None  # xdist's own hook then reads the variable


@pytest.mark.parametrize(("dist", "ours"), [("loadfile", True), ("load", False), ("no", False)])
def test_the_scheduler_is_ours_only_for_loadfile(dist, ours):
    class Config:  # what the schedulers read of pytest's config
        def getoption(self, name):
            assert name == "dist"
            return dist

        def getvalue(self, name):
            assert name == "tx"
            return ["3*popen"]

    made = root_conftest.pytest_xdist_make_scheduler(Config(), log=None)
    assert isinstance(made, root_conftest.CompileOnceScheduling) if ours else made is None
