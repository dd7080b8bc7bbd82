"""The library as a new user gets it: the wheel, installed into a fresh venv outside the checkout.

Runs from `make wheel-test` (and CI), not `make test`: building and installing take a few minutes.
First the core alone: the grader's console script grades a sample file, and every optional module
refuses in one line that names its extra. Then the extras: each optional module imports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import CS231N_SAMPLE, ROOT

# (module, the extra that installs what it needs); the [mpi] extra's module imports without it.
OPTIONAL = {"bnbackprop.fast": "fast", "bnbackprop.symbolic": "symbolic", "bnbackprop.widgets.triangle": "widgets",
            "bnbackprop.widgets.decompose": "widgets", "bnbackprop.widgets.gradient_size": "widgets",
            "bnbackprop.lowprec": "lowprec"}


@dataclass
class Env:
    """A fresh venv with the wheel installed, and what ran in it."""

    root: Path
    wheel: Path
    work: Path  # the folder commands run in: outside the checkout, so nothing imports from src/
    runs: dict = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def run(self, *cmd, timeout=600) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], cwd=self.work, capture_output=True, text=True, timeout=timeout)

    def pip_install(self, target: str) -> None:
        proc = self.run(self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", target)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def try_import(self, module: str) -> subprocess.CompletedProcess:
        return self.run(self.python, "-c", f"import {module}")


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """Build the wheel, install it without extras, and run the core-only probes."""
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    # Build from a copy of what the wheel is made of, so that setuptools' build/ never lands in the checkout.
    source = base / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(base / "dist")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (base / "dist").glob("bnbackprop-*.whl")
    venv.EnvBuilder(with_pip=True).create(base / "venv")
    env = Env(base / "venv", wheel, base / "work")
    env.work.mkdir()
    (env.work / "student.py").write_text(textwrap.dedent(CS231N_SAMPLE))
    env.pip_install(str(wheel))
    check = env.root / "bin" / "bnbackprop-check"
    env.runs["right"] = env.run(check, "student.py:batchnorm_backward")
    env.runs["wrong"] = env.run(check, "student.py:batchnorm_backward_nogamma")
    env.runs["where"] = env.run(env.python, "-c", "import bnbackprop; print(bnbackprop.__file__)")
    env.runs["mpi"] = env.run(env.python, "-c", "from bnbackprop.syncbn_mpi import missing_mpi; print(missing_mpi())")
    env.runs |= {m: env.try_import(m) for m in OPTIONAL}
    return env


@pytest.fixture(scope="module")
def full(core):
    """The same venv after `pip install wheel[widgets,fast,symbolic,lowprec]` ([mpi] brings an MPI: not here)."""
    core.pip_install(f"{core.wheel}[widgets,fast,symbolic,lowprec]")
    return core


def test_the_installed_package_is_the_wheel_not_the_checkout(core):
    where = Path(core.runs["where"].stdout.strip())
    assert core.root in where.parents and ROOT not in where.parents, where


def test_the_console_script_grades_a_file(core):
    right, wrong = core.runs["right"], core.runs["wrong"]
    assert right.returncode == 0 and "CORRECT" in right.stdout, right.stdout + right.stderr
    assert wrong.returncode != 0 and "gamma_dropped" in wrong.stdout, wrong.stdout + wrong.stderr


def test_the_core_needs_no_extra(core):
    modules = ["batchnorm", "batches", "bngraph", "double_backward", "draw", "draw_normalizations", "engine", "gradcheck",
               "grader", "mlp", "names", "normalizations", "passcount", "reference", "syncbn", "syncbn_mpi"]
    proc = core.try_import(", ".join(f"bnbackprop.{m}" for m in modules))
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("module", OPTIONAL)
def test_a_missing_extra_is_named_in_one_line(core, module):
    proc = core.runs[module]
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0
    assert last.startswith("ModuleNotFoundError: ") and f"pip install 'bnbackprop[{OPTIONAL[module]}]'" in last, proc.stderr


def test_the_mpi_module_says_what_it_needs(core):
    assert core.runs["mpi"].returncode == 0 and "bnbackprop[mpi]" in core.runs["mpi"].stdout, core.runs["mpi"]


@pytest.mark.parametrize("module", OPTIONAL)
def test_with_its_extra_each_module_imports(full, module):
    proc = full.try_import(module)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_fast_backward_runs_from_the_wheel(full):
    code = ("import numpy as np\n"
            "from bnbackprop.batches import random_batch\n"
            "from bnbackprop.batchnorm import backward, forward\n"
            "from bnbackprop.fast import backward_fast\n"
            "x, gamma, beta, dy = random_batch(0, (16, 5), 2.0, 3.0)\n"
            "cache = forward(x, gamma, beta)[1]\n"
            "for got, want in zip(backward_fast(dy, cache), backward(dy, cache)):\n"
            "    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()\n")
    proc = full.run(full.python, "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
