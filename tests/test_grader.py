"""The grader: each known mistake, written the way a reader would write it, is named; right answers pass."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bnbackprop.batchnorm import backward, backward_staged
from bnbackprop.bngraph import engine_backward
from bnbackprop.grader.__main__ import main as check_main
from bnbackprop.grader.bugs import BUGS
from bnbackprop import grader
from bnbackprop.grader import diagnose, runner
from bnbackprop.grader.cases import CASES
from helpers import CS231N_SAMPLE


# Readers' implementations, plain convention: (x, gamma, beta, dy, eps) -> (dx, dgamma, dbeta), 2-D only.

def _fwd(x, eps, ddof=0):
    """The forward statistics a reader would recompute: xmu, std, xhat."""
    xmu = x - x.mean(axis=0)
    std = np.sqrt((xmu**2).sum(axis=0) / (x.shape[0] - ddof) + eps)
    return xmu, std, xmu / std


def reader_gamma_dropped(x, gamma, beta, dy, eps):
    _, std, xhat = _fwd(x, eps)
    dx = (dy - dy.mean(axis=0) - xhat * (dy * xhat).mean(axis=0)) / std
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_wrong_axis(x, gamma, beta, dy, eps):
    _, std, xhat = _fwd(x, eps)
    g = gamma * dy
    dx = (g - g.mean(axis=1) - xhat * (g * xhat).mean(axis=1)) / std
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_wrong_axis_keepdims(x, gamma, beta, dy, eps):
    """Layer norm's axis: runs on every shape."""
    _, std, xhat = _fwd(x, eps)
    g = gamma * dy
    dx = (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True)) / std
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_variance_term_dropped(x, gamma, beta, dy, eps):
    _, std, xhat = _fwd(x, eps)
    dxhat = gamma * dy
    dx = (dxhat - dxhat.mean(axis=0)) / std
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_bessel_mismatch(x, gamma, beta, dy, eps):
    """makemore's Bessel forward, with the biased formula's backward."""
    _, std, xhat = _fwd(x, eps, ddof=1)
    g = gamma * dy
    dx = (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0)) / std
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_bessel_right(x, gamma, beta, dy, eps):
    """makemore's formula: dhprebn = bngain*bnvar_inv/n * (n*dh - dh.sum(0) - n/(n-1)*bnraw*(dh*bnraw).sum(0))."""
    n = x.shape[0]
    _, std, xhat = _fwd(x, eps, ddof=1)
    dx = gamma / std / n * (n * dy - dy.sum(0) - n / (n - 1) * xhat * (dy * xhat).sum(0))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_missing_inv_n(x, gamma, beta, dy, eps):
    """Staged, with dmu/dx taken as 1."""
    N = x.shape[0]
    xmu, std, xhat = _fwd(x, eps)
    dxhat = gamma * dy
    dvar = (dxhat * xmu).sum(axis=0) * -0.5 * std**-3
    dxmu = dxhat / std + 2 * xmu * dvar / N
    dx = dxmu - dxmu.sum(axis=0)
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def reader_param_grads_wrong_axis(x, gamma, beta, dy, eps):
    """CS231n's 'alt' form of dx, right; the parameter sums run along the features."""
    N = x.shape[0]
    _, std, xhat = _fwd(x, eps)
    dxhat = dy * gamma
    dx = (N * dxhat - np.sum(dxhat, axis=0) - xhat * np.sum(dxhat * xhat, axis=0)) / (N * std)
    return dx, np.sum(dy * xhat, axis=1), np.sum(dy, axis=1)


def reader_two_mistakes(x, gamma, beta, dy, eps):
    """gamma dropped AND the variance term dropped: no single known mistake."""
    _, std, xhat = _fwd(x, eps)
    return (dy - dy.mean(axis=0)) / std, (dy * xhat).sum(axis=0), dy.sum(axis=0)


# cs231n convention with the book's Cache: the reader uses the cache's fields.

def reader_eps_outside_sqrt(dout, cache):
    ivar = 1.0 / (np.sqrt(cache.var) + cache.eps)
    g = cache.gamma * dout
    dx = (g - g.mean(axis=0) - cache.xhat * (g * cache.xhat).mean(axis=0)) * ivar
    return dx, (dout * cache.xhat).sum(axis=0), dout.sum(axis=0)


# cs231n convention with the reader's own forward and tuple cache, as in the assignment.

def cs231n_forward(x, gamma, beta, bn_param):
    eps = bn_param.get("eps", 1e-5)
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, (xhat, gamma, np.sqrt(var + eps))


def cs231n_backward(dout, cache):
    xhat, gamma, std = cache
    N = dout.shape[0]
    dxhat = dout * gamma
    dx = (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) / (N * std)
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def cs231n_backward_no_variance(dout, cache):
    xhat, gamma, std = cache
    dxhat = dout * gamma
    return (dxhat - dxhat.mean(axis=0)) / std, (dout * xhat).sum(axis=0), dout.sum(axis=0)


MISTAKES = [
    ("gamma_dropped", reader_gamma_dropped, "plain", 0),
    ("wrong_axis", reader_wrong_axis, "plain", 0),
    ("wrong_axis", reader_wrong_axis_keepdims, "plain", 0),
    ("variance_term_dropped", reader_variance_term_dropped, "plain", 0),
    ("bessel_mismatch", reader_bessel_mismatch, "plain", 1),
    ("eps_outside_sqrt", reader_eps_outside_sqrt, "cs231n", 0),
    ("missing_inv_n", reader_missing_inv_n, "plain", 0),
    ("param_grads_wrong_axis", reader_param_grads_wrong_axis, "plain", 0),
]


@pytest.mark.parametrize("name, fn, convention, ddof", MISTAKES, ids=[m[1].__name__ for m in MISTAKES])
def test_each_known_mistake_is_named_and_no_other(name, fn, convention, ddof):
    report = diagnose(fn, convention, ddof=ddof)
    assert report.verdict == "known mistake", str(report)
    assert [b.name for b in report.matches] == [name]
    assert not report.passed
    text = str(report)
    assert BUGS[name].explanation in text and BUGS[name].section in text


def test_the_planted_bugs_themselves_are_named(monkeypatch):
    """Every harmful bug in the registry, called with the book's Cache, is recognised as itself.

    Run on the thread fallback: chapter 12 runs this same check through forked children, in both of
    make test's notebook runs. Forked here, from a collected test worker of 200+ MB, it took 3.6 s
    under make test's load, nearly all of it forking; on threads, about 0.1 s.
    """
    monkeypatch.setattr(runner, "FORK", False)
    monkeypatch.setattr(grader, "FORK", False)
    for name, bug in BUGS.items():
        ddof = 1 if name == "bessel_mismatch" else 0
        report = diagnose(bug.backward, "cs231n", ddof=ddof)
        if bug.harmless:
            assert report.passed, str(report)
        else:
            assert [b.name for b in report.matches] == [name], str(report)


@pytest.mark.parametrize("fn, convention", [
    (backward_staged, "cs231n"),
    (backward, "cs231n"),
    (lambda x, gamma, beta, dy, eps: engine_backward(dy, x, gamma, beta, eps), "plain"),
], ids=["staged", "compact", "engine"])
def test_three_independent_correct_implementations_pass(fn, convention):
    report = diagnose(fn, convention)
    assert report.passed and report.verdict == "correct", str(report)
    assert report.failing == [] and report.notes == []  # all three handle NCHW too
    assert all(e < 1e-10 for r in report.results for e in r.errors.values())
    assert str(report).count("PASS") == len(CASES)


def test_readers_cs231n_forward_and_backward_pass_and_nchw_is_not_a_mistake():
    report = diagnose(cs231n_backward, "cs231n", forward_fn=cs231n_forward)
    assert report.passed, str(report)
    assert report.ddof == 0 and "yours (cs231n_forward)" in str(report)
    assert [r.status for r in report.results if r.case.nchw] == ["unsupported", "unsupported"]
    assert any("does not support NCHW" in n for n in report.notes)


def test_readers_own_forward_with_a_known_mistake():
    report = diagnose(cs231n_backward_no_variance, "cs231n", forward_fn=cs231n_forward)
    assert [b.name for b in report.matches] == ["variance_term_dropped"], str(report)


def test_a_wrong_forward_is_reported_even_when_the_backward_is_right():
    def forward_no_beta(x, gamma, beta, bn_param):
        out, cache = cs231n_forward(x, gamma, beta, bn_param)
        return out - beta, cache

    report = diagnose(cs231n_backward, "cs231n", forward_fn=forward_no_beta)
    assert report.verdict == "correct" and not report.passed
    assert "FORWARD WRONG" in str(report) and "y is wrong in: basic, wide" in str(report)


def test_a_forward_that_returns_no_cache():
    report = diagnose(cs231n_backward, "cs231n", forward_fn=lambda x, gamma, beta, bn_param: x)
    assert report.verdict == "could not run"
    assert "your forward returned a ndarray; expected a pair (out, cache), in every case" in report.headline()


def test_a_forward_that_never_returns_times_out():
    def hangs(x, gamma, beta, bn_param):
        time.sleep(30)

    report = diagnose(cs231n_backward, "cs231n", forward_fn=hangs, timeout=0.2)
    assert report.verdict == "timed out" and report.exit_code == 4
    assert "did not return within 0.2 s" in str(report)


def test_bessel_is_read_off_the_readers_forward():
    def forward_bessel(x, gamma, beta, bn_param):
        xhat = (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + bn_param["eps"])
        return gamma * xhat + beta, (x, gamma, beta, bn_param["eps"])

    def backward_bessel(dout, cache):
        return reader_bessel_right(cache[0], cache[1], cache[2], dout, cache[3])

    report = diagnose(backward_bessel, "cs231n", forward_fn=forward_bessel)
    assert report.ddof == 1 and report.passed, str(report)
    assert "Bessel-corrected" in str(report)
    assert diagnose(reader_bessel_right, "plain", ddof=1).passed
    assert [b.name for b in diagnose(reader_bessel_right, "plain", ddof=0).matches] == []


def test_two_mistakes_at_once_are_not_guessed():
    report = diagnose(reader_two_mistakes, "plain")
    assert report.verdict == "not recognised" and report.matches == []
    text = str(report)
    assert "cause not recognised" in text
    assert all(name in text for name in report.failing) and len(report.failing) >= 6


def test_wrong_signature_is_reported_not_raised():
    def backward_one_arg(dout):
        return dout, dout, dout

    report = diagnose(backward_one_arg, "cs231n")
    assert report.verdict == "could not run" and not report.passed
    assert "wrong signature" in str(report) and "backward(dout, cache)" in str(report)
    hint = diagnose(reader_gamma_dropped, "cs231n").headline()
    assert "It fits the 'plain' convention: pass convention='plain'" in hint


def test_wrong_number_of_outputs_and_wrong_shapes():
    report = diagnose(lambda x, gamma, beta, dy, eps: dy, "plain")
    assert report.verdict == "could not run"
    assert "expected a tuple (dx, dgamma, dbeta)" in str(report)

    def transposed(x, gamma, beta, dy, eps):
        dx, dgamma, dbeta = engine_backward(dy, x, gamma, beta, eps)
        return dx, dgamma[:, None], dbeta
    text = str(diagnose(transposed, "plain"))
    assert "dgamma has shape (4, 1), expected (4,)" in text


def test_float32_outputs_are_pointed_out():
    def in_float32(x, gamma, beta, dy, eps):
        x, gamma, dy = (a.astype(np.float32) for a in (x, gamma, dy))
        xmu, std, xhat = _fwd(x, eps)
        g = gamma * dy
        return (g - g.mean(0) - xhat * (g * xhat).mean(0)) / std, (dy * xhat).sum(0), dy.sum(0)

    report = diagnose(in_float32, "plain")
    assert not report.passed and "low precision (float32)" in str(report)


def test_a_function_that_raises_shows_the_exception():
    def not_done(dout, cache):
        raise NotImplementedError("TODO: implement batchnorm_backward")

    report = diagnose(not_done)
    assert report.verdict == "could not run" and "in every case" in report.headline()
    assert "raised NotImplementedError: TODO: implement batchnorm_backward" in str(report)


def test_nan_outputs_are_reported():
    def nan_dx(dout, cache):
        dx, dgamma, dbeta = backward(dout, cache)
        return dx * np.nan, dgamma, dbeta

    report = diagnose(nan_dx)
    assert not report.passed and "dx contain(s) NaN or infinity" in str(report)


def test_a_function_that_never_returns_times_out():
    def hangs(dout, cache):
        time.sleep(30)  # in a child process, killed after the timeout

    start = time.perf_counter()
    report = diagnose(hangs, timeout=0.2)
    assert time.perf_counter() - start < 5
    assert report.verdict == "timed out" and report.headline().startswith("TIMED OUT")
    assert "did not return within 0.2 s" in str(report)
    assert [r.status for r in report.results].count("skipped") == len(CASES) - 1


@pytest.mark.parametrize("kwargs, match", [
    ({"backward_fn": 3}, "backward_fn must be a function"),
    ({"backward_fn": backward, "convention": "torch"}, "or one of"),
    ({"backward_fn": backward, "ddof": 2}, "ddof must be None"),
    ({"backward_fn": backward, "timeout": 0}, "timeout must be a number of seconds in"),
    ({"backward_fn": backward, "timeout": float("nan")}, "timeout must be a number of seconds in"),
    ({"backward_fn": backward, "timeout": float("inf")}, "timeout must be a number of seconds in"),
    ({"backward_fn": backward, "timeout": 1e12}, "timeout must be a number of seconds in"),
    ({"backward_fn": backward, "timeout": True}, "timeout must be a number of seconds; got True"),
    ({"backward_fn": backward, "forward_fn": 3}, "forward_fn must be a function"),
])
def test_misusing_diagnose_is_a_value_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        diagnose(**kwargs)


def test_reports_are_deterministic_and_render_as_html():
    a, b = str(diagnose(reader_gamma_dropped, "plain")), str(diagnose(reader_gamma_dropped, "plain"))
    assert a == b and "0x" not in a
    page = diagnose(reader_gamma_dropped, "plain")._repr_html_()
    assert "<td>basic</td>" in page and "<code>gamma_dropped</code>" in page
    assert "&lt;1e-12" in page  # escaped, not a broken tag



def run_check(*args):
    return subprocess.run([sys.executable, "-m", "bnbackprop.grader", *args], capture_output=True, text=True, timeout=120)


def test_command_line_exit_codes(tmp_path):
    path = tmp_path / "layers.py"
    path.write_text(textwrap.dedent(CS231N_SAMPLE))
    ok = run_check(f"{path}:batchnorm_backward", "--forward", "batchnorm_forward")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "CORRECT" in ok.stdout
    bad = run_check(f"{path}:batchnorm_backward_nogamma", "--forward", "batchnorm_forward")
    assert bad.returncode == 1 and "known mistake: gamma_dropped" in bad.stdout
    assert BUGS["gamma_dropped"].section in bad.stdout



@pytest.mark.parametrize("argv, message", [
    (["{path}:no_such_function"], "has no function named 'no_such_function'"),
    (["{path}"], "expected path/to/file.py:function_name"),
    (["{dir}/missing.py:f"], "no such file"),
    (["{path}:batchnorm_backward", "--convention", "plain", "--forward", "batchnorm_forward"], "--forward goes with"),
    (["{path}:batchnorm_backward", "--forward", "no_such_forward"], "has no function named 'no_such_forward'"),
])
def test_command_line_usage_errors_exit_2(tmp_path, capsys, argv, message):
    path = tmp_path / "layers.py"
    path.write_text(textwrap.dedent(CS231N_SAMPLE))
    assert check_main([a.format(path=path, dir=tmp_path) for a in argv]) == 2
    assert message in capsys.readouterr().err
