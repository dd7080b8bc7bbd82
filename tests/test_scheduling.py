"""How `make test` spreads its work (root conftest.py): the numba files as one unit, one worker per core plus one."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import shlex
import tomllib
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

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


def uses_fast(path: Path) -> bool:
    """True if the module imports bnbackprop.fast, in any spelling."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name == "bnbackprop.fast" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module == "bnbackprop.fast" or (
                node.module == "bnbackprop" and any(a.name == "fast" for a in node.names))):
            return True
    return False


def test_every_test_file_that_runs_the_numba_kernels_is_in_the_unit():
    # A new file calling bnbackprop.fast outside the unit would compile the kernels on a second worker.
    uses = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py") if uses_fast(p)}
    assert uses == root_conftest.NUMBA_FILES


def test_uses_fast_sees_every_spelling(tmp_path):
    spellings = ["import bnbackprop.fast as bf", "from bnbackprop import batchnorm, fast", "from bnbackprop.fast import backward_fast"]
    for k, text in enumerate(spellings + ["from bnbackprop import batchnorm", "import bnbackprop.fastish"]):
        (tmp_path / f"m{k}.py").write_text(text + "\n")
        assert uses_fast(tmp_path / f"m{k}.py") == (k < len(spellings)), text


def test_make_test_asks_for_the_scheduler_and_names_each_plugin_it_loads():
    addopts = shlex.split(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"])
    assert {("-n", "auto"), ("--dist", "loadfile")} <= set(zip(addopts, addopts[1:]))  # else the hooks never act
    assert "--disable-plugin-autoload" in addopts
    # -p takes entry-point names, so that `-p no:xdist` and the like still switch a plugin off
    named = {b for a, b in zip(addopts, addopts[1:]) if a == "-p"}
    entry_points = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    assert named == {"xdist", "xdist.looponfail", "nbval", "hypothesispytest"} and named <= entry_points


def auto_config(numprocesses):
    """The part of pytest's config that the worker-count hooks read."""
    return SimpleNamespace(option=SimpleNamespace(numprocesses=numprocesses))


def test_auto_starts_one_worker_more_than_xdist_would(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    config = auto_config("auto")
    assert root_conftest.pytest_xdist_auto_num_workers(config) == root_conftest.xdist_auto_num_workers(config) + 1
    assert root_conftest.pytest_xdist_auto_num_workers(auto_config("logical")) is None  # xdist's own count
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    assert root_conftest.pytest_xdist_auto_num_workers(config) is None  # xdist's own hook then reads the variable


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


def test_every_unit_with_a_measured_time_exists():
    units = {root_conftest.NUMBA_UNIT} | {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}
    units |= {f"book/{p.name}{suffix}" for p in (ROOT / "book").glob("*.ipynb") for suffix in ("", "[second_env]")}
    assert set(root_conftest.UNIT_SECONDS) <= units
    assert root_conftest.unit_seconds("book/01_graph.ipynb") == root_conftest.NOTEBOOK_SECONDS
    assert root_conftest.unit_seconds("tests/test_math.py") == root_conftest.TEST_FILE_SECONDS


def test_units_start_longest_first_and_ties_keep_xdists_order(monkeypatch):
    handed = []
    monkeypatch.setattr(root_conftest.LoadFileScheduling, "_assign_work_unit",
                        lambda self, node: handed.append(self.workqueue.popitem(last=False)[0]))
    sched = object.__new__(root_conftest.CompileOnceScheduling)
    # xdist's order: most tests first
    names = ["tests/test_syncbn.py", "book/03_triangle.ipynb", "tests/test_math.py", "tests/test_grader.py",
             "book/01_graph.ipynb", root_conftest.NUMBA_UNIT, "book/11_speed.ipynb[second_env]"]
    sched.workqueue = OrderedDict.fromkeys(names, {})
    for _ in names:
        sched._assign_work_unit(None)
    assert handed == [root_conftest.NUMBA_UNIT, "tests/test_grader.py", "book/11_speed.ipynb[second_env]",
                      "book/03_triangle.ipynb", "book/01_graph.ipynb", "tests/test_syncbn.py", "tests/test_math.py"]
