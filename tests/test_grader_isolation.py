"""Issue 12's reproducers: wrong verdicts, escapes from isolation, the CLI's arguments and its JSON report."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bnbackprop.batchnorm import backward
from bnbackprop.bngraph import engine_backward
from bnbackprop.grader import diagnose, runner
from bnbackprop.grader.bugs import BUGS, FINGERPRINTS
from helpers import run_cli


def plain_right(x, gamma, beta, dy, eps):
    """A plain-convention backward that handles (N, D) and NCHW."""
    return engine_backward(dy, x, gamma, beta, eps)


# Wrong verdicts

def test_a_wrong_nchw_gradient_with_keepdims_param_grads_fails():
    """Right on 2-D, 3 * dx on 4-D with dgamma and dbeta shaped (1, C, 1, 1): judged, and wrong."""
    def sneaky(x, gamma, beta, dy, eps):
        dx, dgamma, dbeta = plain_right(x, gamma, beta, dy, eps)
        if x.ndim == 4:
            return 3 * dx, dgamma.reshape(1, -1, 1, 1), dbeta.reshape(1, -1, 1, 1)
        return dx, dgamma, dbeta

    report = diagnose(sneaky)
    assert report.verdict == "not recognised" and report.exit_code == 1, str(report)
    assert report.failing == ["nchw", "nchw_large"]
    assert any("keepdims shape (1, 8, 1, 1)" in n for n in report.notes)


def test_keepdims_param_grads_are_a_convention_not_a_failure():
    def keepdims(x, gamma, beta, dy, eps):
        dx, dgamma, dbeta = plain_right(x, gamma, beta, dy, eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return dx, dgamma.reshape(shape), dbeta.reshape(shape)

    report = diagnose(keepdims)
    assert report.passed and all(r.status == "pass" for r in report.results), str(report)
    assert any("accepted as a convention" in n for n in report.notes)


def test_a_backward_wrong_only_for_large_batches_fails():
    def small_only(x, gamma, beta, dy, eps):
        dx, dgamma, dbeta = plain_right(x, gamma, beta, dy, eps)
        return (dx if x.shape[0] <= 8 else 1.01 * dx), dgamma, dbeta

    report = diagnose(small_only)
    assert not report.passed and "large" in report.failing and "nchw_large" in report.failing


def test_the_battery_has_a_large_case_and_a_second_seed():
    from bnbackprop.grader.cases import CASES

    shapes = {c.name: c.shape for c in CASES}
    assert shapes["large"] == (64, 16) and len({c.seed for c in CASES if c.shape == (6, 4)}) == 2


def test_complex_outputs_are_refused():
    def complex_dx(dout, cache):
        dx, dgamma, dbeta = backward(dout, cache)
        return dx + 1e3j, dgamma, dbeta

    report = diagnose(complex_dx)
    assert report.verdict == "refused" and report.exit_code == 3
    assert report.headline().startswith("REFUSED: dx is complex (complex128)")


def test_object_outputs_are_refused():
    def objects(dout, cache):
        dx, dgamma, dbeta = backward(dout, cache)
        return dx.astype(object), dgamma, dbeta

    report = diagnose(objects)
    assert report.verdict == "refused" and "dx came back as an array of object" in report.headline()


def test_lists_are_accepted_and_judged():
    def as_lists(dout, cache):
        return tuple(a.tolist() for a in backward(dout, cache))

    assert diagnose(as_lists).passed

    def wrong_lists(dout, cache):
        dx, dgamma, dbeta = backward(dout, cache)
        return (2 * dx).tolist(), dgamma.tolist(), dbeta.tolist()

    assert diagnose(wrong_lists).verdict == "not recognised"


# Isolation: each escape ends in its verdict and exit code

ESCAPES = {
    "os_exit": ("import os\n\ndef bw(dout, cache):\n    os._exit(0)\n", "exited", 5, "EXITED (code 0) before returning"),
    "sys_exit": ("import sys\n\ndef bw(dout, cache):\n    sys.exit(0)\n", "could not run", 3, "raised SystemExit"),
    "segfault": ("import os, signal\n\ndef bw(dout, cache):\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
                 "crashed", 5, "CRASHED (signal 11)"),
    "gil": ('import re\n\ndef bw(dout, cache):\n    re.fullmatch(r"(a+)+$", "a" * 40 + "b")\n', "timed out", 4, "TIMED OUT"),
    "atexit": ("import atexit, os\natexit.register(lambda: os._exit(0))\n\ndef bw(dout, cache):\n"
               "    from bnbackprop.batchnorm import backward\n    dx, dg, db = backward(dout, cache)\n    return 2 * dx, dg, db\n",
               "not recognised", 1, "WRONG"),
    "tolerance": ("import bnbackprop.grader.cases as c, bnbackprop.grader.judge as j\nc.PASS_TOL = j.PASS_TOL = 1e9\n\n"
                  "def bw(dout, cache):\n    from bnbackprop.batchnorm import backward\n    c.PASS_TOL = j.PASS_TOL = 1e9\n"
                  "    dx, dg, db = backward(dout, cache)\n    return 2 * dx, dg, db\n", "not recognised", 1, "WRONG"),
}


@pytest.mark.parametrize("name", ESCAPES)
def test_each_escape_ends_in_its_verdict_and_exit_code(tmp_path, name):
    source, verdict, code, headline = ESCAPES[name]
    start = time.perf_counter()
    proc = run_cli(tmp_path, source, "bw", "--timeout", "1", "--json")
    assert time.perf_counter() - start < 20
    assert proc.returncode == code, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == verdict and report["exit_code"] == code and headline in report["headline"]


@pytest.mark.parametrize("source, code, words", [
    ("import os\nos._exit(0)\n\ndef bw(dout, cache):\n    pass\n", 5, "EXITED (code 0) before returning"),
    ("raise ImportError('no module named cs231n')\n\ndef bw(dout, cache):\n    pass\n", 3, "run it with python on its own"),
])
def test_the_files_top_level_code_runs_only_in_the_child(tmp_path, source, code, words):
    proc = run_cli(tmp_path, source, "bw", "--timeout", "2")
    assert proc.returncode == code and words in proc.stdout, proc.stdout + proc.stderr


def test_deep_recursion_crashes_the_child_not_the_grader(tmp_path):
    source = ("import sys\n\ndef bw(dout, cache):\n    sys.setrecursionlimit(10**6)\n    nested = []\n"
              "    for _ in range(10**5):\n        nested = [nested]\n    return repr(nested)\n")
    proc = run_cli(tmp_path, source, "bw", "--timeout", "30")
    assert proc.returncode == 5 and "CRASHED (signal 11)" in proc.stdout, proc.stdout + proc.stderr


def test_the_readers_prints_do_not_reach_stdout(tmp_path):
    source = "def bw(dout, cache):\n    print('CORRECT, trust me')\n    raise ValueError('nope')\n"
    proc = run_cli(tmp_path, source, "bw", "--json")
    assert json.loads(proc.stdout)["verdict"] == "could not run" and "trust me" in proc.stderr


def test_without_fork_the_thread_fallback_says_so(monkeypatch):
    monkeypatch.setattr(runner, "FORK", False)
    from bnbackprop import grader

    monkeypatch.setattr(grader, "FORK", False)
    report = diagnose(backward)
    assert report.passed and runner.NO_FORK_NOTE in report.notes


def test_a_forged_message_cannot_run_code_in_the_grader():
    """The child's bytes are parsed as JSON and .npy without pickle: a pickle is refused, not run."""
    import pickle

    with pytest.raises(Exception):
        runner._decode(pickle.dumps({"info": {}, "arrays": []}))


# Real bugs, named as their sources state them

@pytest.mark.parametrize("name", ["mean_and_variance_paths_dropped", "wrong_count", "gamma_dropped"])
def test_real_bugs_are_in_the_registry_with_sources_and_are_named(name):
    assert BUGS[name].sources and all(s.startswith("https://github.com/") for s in BUGS[name].sources)
    report = diagnose(BUGS[name].backward)
    assert [b.name for b in report.matches] == [name], str(report)


def test_dl4j_dx_is_gamma_dy_over_s():
    from bnbackprop.batchnorm import forward

    rng = np.random.default_rng(5)
    for shape in [(6, 4), (9, 3), (3, 2, 4, 5)]:
        x = 3 + 2 * rng.standard_normal(shape)
        gamma, beta, dy = rng.standard_normal(shape[1]), rng.standard_normal(shape[1]), rng.standard_normal(shape)
        _, cache = forward(x, gamma, beta, 1e-3)
        np.testing.assert_allclose(BUGS["mean_and_variance_paths_dropped"].backward(dy, cache)[0],
                                   cache.gamma * dy / cache.s, rtol=1e-13)


def test_the_harmless_reports_agree_with_the_truth():
    """MXNet's kept term and darknet's dropped one are both the right gradient: the grader passes them."""
    for name in ("mean_via_variance_kept", "mean_via_variance_dropped"):
        assert BUGS[name].harmless and diagnose(BUGS[name].backward).passed


def test_the_registry_holds_every_cited_bug():
    cited = {name for name, bug in BUGS.items() if bug.sources}
    assert cited == {"gamma_dropped", "wrong_count", "mean_and_variance_paths_dropped", "mean_via_variance_dropped",
                     "mean_via_variance_kept"}
    assert {b.name for b in FINGERPRINTS} == set(BUGS)


def test_grader_time_per_report_is_a_few_seconds():
    start = time.perf_counter()
    diagnose(BUGS["wrong_count"].backward)
    assert time.perf_counter() - start < 5
