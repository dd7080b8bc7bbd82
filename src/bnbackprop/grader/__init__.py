"""The grader: run a reader's batch-norm backward on a battery of cases and name the mistake when it is a known one.

`diagnose(backward_fn)` accepts two calling conventions, read off the function's signature
(``convention=`` overrides it):

- ``"cs231n"``: ``backward_fn(dout, cache) -> (dx, dgamma, dbeta)``, as in CS231n's
  `batchnorm_backward`. The cache comes from ``forward_fn(x, gamma, beta, bn_param)`` (CS231n's
  `batchnorm_forward`, returning ``(out, cache)``, with ``bn_param = {"mode": "train", "eps": eps}``;
  a forward whose fourth parameter is named ``eps`` gets the number instead). Without a
  ``forward_fn`` the cache is this book's `bnbackprop.Cache` from `bnbackprop.forward`: attributes
  x, mu, xmu, var, s, inv_s, xhat, gamma (broadcast shape, e.g. (1, D)), eps, ddof, axes, B.
- ``"plain"``: ``backward_fn(x, gamma, beta, dy, eps) -> (dx, dgamma, dbeta)``.

Bessel's correction (makemore divides the variance by B - 1): pass ``ddof=1``. With the reader's
own forward, ``ddof=None`` (the default) reads it off the forward's output.

The truth for every case is `bnbackprop.backward`, cross-checked against HIPS autograd
(`bnbackprop.reference.autograd_backward`). A failing implementation is compared with every
planted bug in `bnbackprop.grader.bugs.BUGS` (and in its `FINGERPRINTS`, which adds other spellings of the
same mistakes) on the same 2-D cases: a bug is named only when the reader's function behaves exactly
like it on every one of them (the same three outputs to a CS231n relative error of 1e-8, or an
exception wherever the bug raises one), and the bug differs from the right answer on at least one.
Otherwise the report says "cause not recognised". On NCHW input a function that raises, returns a
dx of the wrong shape, or per-feature dgamma and dbeta (the 2-D formula applied over axis 0 only)
does not support NCHW, which is noted and not counted; otherwise dx is judged there too. dgamma and
dbeta in the keepdims shape (1, C) or (1, C, 1, 1) are accepted, with a note.

Results are float64; a report prints relative errors below 1e-12 as "<1e-12" so it is repeatable.

The reader's code runs in a forked child process, one per case (see `bnbackprop.grader.runner`):
it cannot change a tolerance or the verdict, and a hang, a crash or an exit ends in the verdict
TIMED OUT, CRASHED (signal N) or EXITED (code N). Outputs are converted to arrays once, in the
child; complex, boolean and object outputs are refused. `diagnose_file` imports a file inside the
child only, so not even the file's top-level code runs in the grader.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..batchnorm import forward as _book_forward
from .cases import CASES, CONVENTIONS
from .judge import judge_case, truth, verdict
from .report import Report
from .runner import (
    FORK,
    NO_FORK_NOTE,
    Missing,
    Target,
    case_job,
    check_timeout,
    probe_job,
    run_isolated,
)

FORWARD_NAME = "batchnorm_forward"  # CS231n's name: found beside the backward in a file


def diagnose(backward_fn: Callable, convention: str | None = None, forward_fn: Callable | None = None,
             ddof: int | None = None, timeout: float = 5.0) -> Report:
    """Run the battery on the reader's backward and return a Report (print it, or show it in a notebook)."""
    if not callable(backward_fn):
        raise ValueError(f"backward_fn must be a function; got {type(backward_fn).__name__}")
    if forward_fn is not None and not callable(forward_fn):
        raise ValueError(f"forward_fn must be a function (x, gamma, beta, bn_param) -> (out, cache); got {forward_fn!r}")
    return _grade(Target(backward_fn, forward_fn), convention, ddof, timeout)


def diagnose_file(path: str, name: str, convention: str | None = None, forward: str | None = None,
                  ddof: int | None = None, timeout: float = 5.0) -> Report:
    """Grade function `name` of the file at `path`, imported only in the child; finds batchnorm_forward itself."""
    target = Target(path=str(path), name=name, forward_name=forward or "")
    return _grade(target, convention, ddof, timeout, find_forward="" if forward else FORWARD_NAME)


def _check_args(convention, ddof, timeout) -> float:
    """Misuse of the grader itself is a ValueError or TypeError; the reader's function is judged in the report."""
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"convention must be None (read it off the signature) or one of {sorted(CONVENTIONS)}; got {convention!r}")
    # 1.0 == 1, so the test `in (0, 1)` alone would let a float through, and the JSON report promises an int.
    if ddof is not None and (isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof not in (0, 1)):
        raise ValueError(f"ddof must be None (detect), 0 (biased variance) or 1 (Bessel's correction); got {ddof!r}")
    return check_timeout(timeout)


def _grade(target: Target, convention, ddof, timeout, find_forward: str = "") -> Report:
    """Probe the signatures, settle convention, forward and ddof, run every case, judge."""
    timeout = _check_args(convention, ddof, timeout)
    ddof = None if ddof is None else int(ddof)
    notes = [] if FORK else [NO_FORK_NOTE]
    probe = run_isolated(probe_job(target, find_forward), timeout)
    if probe.kind == "missing":
        raise Missing(probe.info["message"])
    head = {"convention": convention or "cs231n", "ddof": ddof or 0, "forward": "not known (your code did not load)", "notes": notes}
    if probe.kind != "ok":
        return _cannot_start(head, probe, timeout)
    info = probe.info
    convention, detected, problem = _convention(info, convention)
    if problem:
        return Report(**head | {"convention": convention}, results=[], verdict="could not run", problem=problem)
    if convention == "cs231n" and info.get("forward") and not target.forward_name and target.path:
        target = Target(path=target.path, name=target.name, forward_name=info["forward"])
        notes.append(f"found {info['forward']} in {target.path} and used it as your forward (--forward NAME picks another)")
    has_forward = convention == "cs231n" and (target.forward is not None or bool(target.forward_name))
    if has_forward and info.get("forward_binds4") is False:
        problem = (f"wrong signature: {info['forward']}({', '.join(info['forward_params'])}) cannot be called as "
                   "forward(x, gamma, beta, bn_param) -> (out, cache)")
        return Report(**head | {"convention": convention}, results=[], verdict="could not run", problem=problem)
    ddof = _resolve_ddof(target, has_forward, ddof, timeout, notes)
    head = {"convention": convention, "ddof": ddof, "forward": _forward_words(convention, has_forward, info),
            "detected": detected}
    return verdict(head, _run_cases(target, convention, ddof, timeout, has_forward, notes), notes)


def _cannot_start(head, probe, timeout) -> Report:
    """The report when even loading or inspecting the reader's code failed."""
    if probe.kind in ("timeout", "crashed", "exited"):
        word = {"timeout": "timed out", "crashed": "crashed", "exited": "exited"}[probe.kind]
        what = {"timeout": f"loading your code did not finish within {timeout:g} s",
                "crashed": f"loading your code killed the process (signal {probe.code})",
                "exited": f"loading your code ended the process (exit code {probe.code})"}[probe.kind]
        from .report import CaseResult

        fake = CaseResult(CASES[0], {"timeout": "timeout"}.get(probe.kind, probe.kind), message=what, code=probe.code)
        return Report(**head, results=[fake], verdict=word, problem=what)
    if probe.info.get("stage") == "import":
        problem = (f"importing your file raised {probe.info.get('message', '')}; "
                   "run it with python on its own to see the whole traceback")
    else:
        problem = f"inspecting your function raised {probe.info.get('message', '')}"
    return Report(**head, results=[], verdict="could not run", problem=problem)


def _convention(info: dict, asked: str | None) -> tuple[str, str, str]:
    """(convention, how it was chosen, problem or ''): plain takes 5 arguments, cs231n takes 2."""
    fits = [c for c, n in (("cs231n", "binds2"), ("plain", "binds5")) if info.get(n) is not False]
    shown = f"{info.get('name', 'backward')}({', '.join(info.get('params', []))})"
    if asked is not None:
        if asked in fits:
            return asked, "", ""
        hint = f". It fits the '{fits[0]}' convention: pass convention='{fits[0]}' (--convention {fits[0]})" if fits else ""
        return asked, "", f"wrong signature: {shown} cannot be called as {CONVENTIONS[asked]}{hint}"
    if not fits:
        return "cs231n", "", (f"wrong signature: {shown} fits neither {CONVENTIONS['cs231n']} nor "
                              f"{CONVENTIONS['plain']}; give it one of these parameter lists")
    if len(fits) == 1:
        return fits[0], " (read off the signature)", ""
    params = info.get("params", [])
    if params and params[0] in ("x", "X", "inp", "input", "inputs"):
        return "plain", " (guessed from the first parameter's name; --convention overrides)", ""
    return "cs231n", " (the signature fits both; --convention overrides)", ""


def _resolve_ddof(target, has_forward, ddof, timeout, notes) -> int:
    """The ddof asked for, else the one the reader's forward uses, else 0."""
    if not has_forward:
        return 0 if ddof is None else ddof
    found = _detect_ddof(target, timeout, notes)
    if ddof is not None and found is not None and found != ddof:
        notes.append(f"you passed ddof={ddof}, but your forward's output says ddof={found}; using ddof={ddof}")
    return ddof if ddof is not None else (found if found is not None else 0)


def _detect_ddof(target, timeout, notes) -> int | None:
    """Which variance the reader's forward divides by, read off its output y on the first case."""
    from ..gradcheck import rel_error
    from .cases import PASS_TOL

    case = CASES[0]
    x, gamma, beta, dy = case.data()
    out = run_isolated(case_job(target, "cs231n", (x, gamma, beta, dy), case.eps), timeout)
    y = out.arrays.get("y")
    if y is None or y.dtype.kind not in "iuf":
        return None
    for ddof in (0, 1):
        y_true, _ = truth(case, ddof)
        if y.shape == y_true.shape and rel_error(y.astype(float), y_true) <= PASS_TOL:
            return ddof
    notes.append("your forward's output matches neither the biased nor the Bessel-corrected batch norm")
    return None


def _run_cases(target, convention, ddof, timeout, has_forward, notes) -> list:
    """Every case in its own child; after a timeout, a crash or an exit the rest are skipped."""
    from .report import CaseResult

    results, seen = [], set()
    for case in CASES:
        if results and results[-1].status in ("timeout", "crashed", "exited", "skipped"):
            results.append(CaseResult(case, "skipped", message="not run: an earlier case did not return"))
            continue
        data = case.data()
        cache = None if convention == "plain" or has_forward else _book_forward(*data[:3], case.eps, ddof)[1]
        outcome = run_isolated(case_job(target, convention, data, case.eps, cache), timeout)
        results.append(judge_case(case, outcome, ddof, timeout, book_cache=cache is not None, notes=seen))
    notes.extend(sorted(seen))
    return results


def _forward_words(convention, has_forward, info) -> str:
    """Where the cache comes from, for the report's second line."""
    if convention == "plain":
        return "none needed (plain convention)"
    if not has_forward:
        return "bnbackprop.batchnorm.forward, cache = bnbackprop.batchnorm.Cache"
    return f"yours ({info.get('forward', 'forward_fn')})"


__all__ = ["Report", "diagnose", "diagnose_file"]
