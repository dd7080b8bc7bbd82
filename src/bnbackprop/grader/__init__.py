"""The grader: run a reader's batch-norm backward on a battery of cases and name the mistake when it is a known one.

`diagnose(backward_fn, convention=...)` accepts two calling conventions:

- ``"cs231n"``: ``backward_fn(dout, cache) -> (dx, dgamma, dbeta)``, as in CS231n's
  `batchnorm_backward`. The cache comes from ``forward_fn(x, gamma, beta, bn_param)`` (CS231n's
  `batchnorm_forward`, returning ``(out, cache)``, with ``bn_param = {"mode": "train", "eps": eps}``;
  a forward whose fourth parameter is named ``eps`` gets the number instead). Without a
  ``forward_fn`` the cache is this book's `bnbackprop.Cache` from `bnbackprop.forward`: attributes
  x, mu, xmu, var, std, ivar, xhat, gamma (broadcast shape, e.g. (1, D)), eps, ddof, axes, B.
- ``"plain"``: ``backward_fn(x, gamma, beta, dy, eps) -> (dx, dgamma, dbeta)``.

Bessel's correction (makemore divides the variance by B - 1): pass ``ddof=1``. With the reader's
own forward, ``ddof=None`` (the default) reads it off the forward's output.

The truth for every case is `bnbackprop.backward`, cross-checked against HIPS autograd
(`bnbackprop.reference.autograd_backward`). A failing implementation is compared with every
planted bug in `bnbackprop.grader.bugs.BUGS` (and in its `FINGERPRINTS`, which adds other spellings of the
same mistakes) on the same 2-D cases: a bug is named only when the reader's function behaves exactly
like it on every one of them (the same three outputs to a CS231n relative error of 1e-8, or an
exception wherever the bug raises one), and the bug differs from the right answer on at least one.
Otherwise the report says "cause not recognised". NCHW cases count only for pass or fail: a
function that raises or returns 2-D-shaped gradients there is reported as not supporting NCHW.

Results are float64; a report prints relative errors below 1e-12 as "<1e-12" so it is repeatable.

The reader's function runs in a daemon thread with a timeout, not a subprocess: a subprocess would
have to pickle the function, and functions defined in a notebook cell, closures and lambdas do not
pickle. The price: a call that never returns cannot be killed, so it is abandoned (it keeps running
in the background until the interpreter exits) and the remaining cases are not run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .cases import CASES, CONVENTIONS
from .judge import _judge, _truth, _verdict
from .report import Report
from .runner import _Runner, _resolve_ddof, _signature_problem


def _check_args(backward_fn, convention, forward_fn, ddof, timeout):
    """Misuse of diagnose itself is a ValueError; the reader's function is judged in the report."""
    if not callable(backward_fn):
        raise ValueError(f"backward_fn must be a function; got {type(backward_fn).__name__}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}; got {convention!r}")
    if forward_fn is not None and (convention != "cs231n" or not callable(forward_fn)):
        raise ValueError("forward_fn must be a function, and only goes with convention='cs231n'")
    if ddof not in (None, 0, 1) or isinstance(ddof, bool):
        raise ValueError(f"ddof must be None (detect), 0 (biased variance) or 1 (Bessel's correction); got {ddof!r}")
    if not np.isscalar(timeout) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")


def _forward_name(forward_fn, convention) -> str:
    """Where the cache comes from, for the report's second line."""
    if convention == "plain":
        return "none needed (plain convention)"
    if forward_fn is None:
        return "bnbackprop.forward, cache = bnbackprop.Cache"
    return f"yours ({getattr(forward_fn, '__name__', 'forward_fn')})"


def _signature_report(backward_fn, convention, forward_fn, ddof, forward) -> Report | None:
    """A report for a function that cannot be called the documented way, else None."""
    nargs = {"cs231n": 2, "plain": 5}[convention]
    problem = _signature_problem(backward_fn, (None,) * nargs, CONVENTIONS[convention])
    if not problem and forward_fn is not None:
        problem = _signature_problem(forward_fn, (None,) * 4, "forward(x, gamma, beta, bn_param) -> (out, cache)")
    if not problem:
        return None
    other = "plain" if convention == "cs231n" else "cs231n"
    if not _signature_problem(backward_fn, (None,) * {"cs231n": 2, "plain": 5}[other], ""):
        problem += f". It fits the '{other}' convention: pass convention='{other}' (--convention {other})"
    return Report(convention, ddof if ddof is not None else 0, forward, [], "could not run", problem=problem)


def diagnose(backward_fn: Callable, convention: str = "cs231n", forward_fn: Callable | None = None,
             ddof: int | None = None, timeout: float = 5.0) -> Report:
    """Run the battery on the reader's backward and return a Report (print it, or show it in a notebook)."""
    _check_args(backward_fn, convention, forward_fn, ddof, timeout)
    forward = _forward_name(forward_fn, convention)
    sig = _signature_report(backward_fn, convention, forward_fn, ddof, forward)
    if sig is not None:
        return sig
    runner, notes = _Runner(backward_fn, convention, forward_fn, timeout), []
    ddof = _resolve_ddof(runner, ddof, notes)
    results = []
    for case in CASES:
        y_true, truth = _truth(case, ddof)
        outcome, y_reader, stage = runner.run(case, ddof)
        results.append(_judge(case, outcome, y_reader, y_true, truth, stage, timeout))
    hung = f"your {runner.hung} did not return within {timeout:g} s" if runner.hung else ""
    return _verdict(convention, ddof, forward, results, notes, hung)


__all__ = ["Report", "diagnose"]
