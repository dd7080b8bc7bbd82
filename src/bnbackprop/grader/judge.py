"""Judging the reader's outputs in the grader's process: the truth, per-case results, fingerprints, the verdict."""

from __future__ import annotations

import signal
from functools import lru_cache

import numpy as np

from .._validate import param_shape
from ..batchnorm import backward as _true_backward
from ..batchnorm import forward as _book_forward
from ..gradcheck import rel_error
from ..reference import autograd_backward
from .bugs import FINGERPRINTS, Bug
from .cases import CROSS_TOL, MATCH_TOL, OUTPUTS, PASS_TOL, Case
from .report import CaseResult, Report
from .runner import Outcome

CACHE_HINT = ("if your backward expects the cache of your own forward, pass it: forward_fn=your_forward "
              "(--forward NAME), or define batchnorm_forward in the same file")


@lru_cache(maxsize=None)
def truth(case: Case, ddof: int):
    """The true y and (dx, dgamma, dbeta), from the compact backward, checked against HIPS autograd."""
    x, gamma, beta, dy = case.data()
    y, cache = _book_forward(x, gamma, beta, case.eps, ddof)
    true = _true_backward(dy, cache)
    other = autograd_backward(dy, x, gamma, beta, case.eps, ddof)
    worst = max(rel_error(a, b) for a, b in zip(true, other))
    if worst > CROSS_TOL:
        raise RuntimeError(f"grader self-check failed in case {case.name}: autograd differs by {worst:.1e}")
    return y, true


def _signal_name(n: int) -> str:
    """SIGSEGV for 11, and so on."""
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _escape(case: Case, outcome: Outcome, timeout: float, where: str) -> CaseResult | None:
    """A result for a call that never came back with outputs, or None."""
    if outcome.kind == "timeout":
        return CaseResult(case, "timeout", message=f"{where} did not return within {timeout:g} s; the process was killed")
    if outcome.kind == "crashed":
        return CaseResult(case, "crashed", message=f"the process running {where} died by signal {outcome.code} "
                          f"({_signal_name(outcome.code)}), for example a segfault or a stack overflow", code=outcome.code)
    if outcome.kind == "exited":
        return CaseResult(case, "exited", message=f"{where} ended the process with exit code {outcome.code} before "
                          "returning (sys.exit, os._exit or similar)", code=outcome.code)
    return None


def _error(case: Case, outcome: Outcome, book_cache: bool) -> CaseResult:
    """A result for code that raised or returned something that is not (dx, dgamma, dbeta)."""
    info = outcome.info
    stage = info.get("stage", "backward")
    where = {"import": "importing your file", "forward": "your forward"}.get(stage, "your backward")
    verb = "raised " if outcome.kind in ("raised", "missing", "broken") else ""
    message = f"{where} {verb}{info.get('message', '')}"
    if case.nchw and stage != "import":
        return CaseResult(case, "unsupported", message=f"does not support NCHW input ({message})", outcome=("raised", message))
    if book_cache and stage == "backward" and info.get("type") in ("TypeError", "AttributeError", "KeyError", "IndexError", "ValueError"):
        message += f"; {CACHE_HINT}"
    return CaseResult(case, "error", message=message, outcome=("raised", message))


def _refusal(arrays: dict) -> str:
    """Why the outputs are not real numbers, or ''."""
    for name in OUTPUTS:
        kind = arrays[name].dtype.kind
        if kind == "c":
            return f"{name} is complex ({arrays[name].dtype}); the gradient of a real loss is real: return real arrays"
        if kind == "b":
            return f"{name} holds booleans, not numbers"
    return ""


def _param_grad(a: np.ndarray, name: str, case: Case, notes: set[str]):
    """(C,)-shaped float64 values, 'unsupported' for per-feature sums of a 2-D-only function, or a shape message."""
    C = case.shape[1]
    if a.shape == (C,):
        return a
    if a.shape == param_shape(len(case.shape), C):
        notes.add(f"{name} came back in the keepdims shape {a.shape}; accepted as a convention (it broadcasts to ({C},))")
        return a.reshape(C)
    if case.nchw and a.shape in (case.shape[1:], (1, *case.shape[1:])):
        return "unsupported"
    return f"{name} has shape {a.shape}, expected ({C},)"


def judge_case(case: Case, outcome: Outcome, ddof: int, timeout: float, book_cache: bool, notes: set[str]) -> CaseResult:
    """Turn one outcome of the reader's code into a CaseResult with a message a student can act on."""
    where = "your forward" if outcome.info.get("stage") == "forward" else "your code"
    if outcome.kind == "ok" and not set(OUTPUTS) <= set(outcome.arrays):
        outcome = Outcome("exited")  # a result message without the outputs was not sent by the grader's job
    escaped = _escape(case, outcome, timeout, where)
    if escaped is not None:
        return escaped
    if outcome.kind != "ok":
        if outcome.kind == "refused":
            return CaseResult(case, "refused", message=outcome.info.get("message", ""))
        return _error(case, outcome, book_cache)
    arrays = outcome.arrays
    refusal = _refusal(arrays)
    if refusal:
        return CaseResult(case, "refused", message=refusal)
    y_true, true = truth(case, ddof)
    dx = arrays["dx"].astype(float)
    if dx.shape != case.shape:
        msg = f"dx has shape {dx.shape}, expected {case.shape}"
        if case.nchw:
            return CaseResult(case, "unsupported", message=f"does not support NCHW input ({msg})", outcome=("ok", None))
        return CaseResult(case, "fail", {"dx": float("nan")}, msg, outcome=("ok", (dx, arrays["dgamma"], arrays["dbeta"])))
    params = [_param_grad(arrays[n].astype(float), n, case, notes) for n in ("dgamma", "dbeta")]
    if any(isinstance(p, str) and p == "unsupported" for p in params):
        return CaseResult(case, "unsupported", message="does not support NCHW input (dgamma and dbeta came back per "
                          "feature, as if the input were (N, features): statistics over axis 0 only)", outcome=("ok", None))
    bad_shape = {n: p for n, p in zip(("dgamma", "dbeta"), params) if isinstance(p, str)}
    got = (dx, *(arrays[n].astype(float) if n in bad_shape else p for n, p in zip(("dgamma", "dbeta"), params)))
    return _values(case, got, arrays, true, y_true, bad_shape)


def _values(case, got, arrays, true, y_true, bad_shape: dict[str, str]) -> CaseResult:
    """Compare values once the shapes are settled; outputs of the wrong shape get no error, only a message."""
    errors = {n: (float("nan") if n in bad_shape else rel_error(a, t)) for n, a, t in zip(OUTPUTS, got, true)}
    msgs = list(bad_shape.values())
    nonfinite = [n for n, a in zip(OUTPUTS, got) if n not in bad_shape and not np.all(np.isfinite(a))]
    if nonfinite:
        msgs.append(f"{', '.join(nonfinite)} contain(s) NaN or infinity")
    y = arrays.get("y")
    forward_wrong = y is not None and (y.shape != y_true.shape or y.dtype.kind == "c" or
                                       not rel_error(y.astype(float), y_true) <= PASS_TOL)
    wrong = [n for n in OUTPUTS if not errors[n] <= PASS_TOL]
    if wrong and not bad_shape:
        right = [n for n in OUTPUTS if n not in wrong]
        msgs.append(f"wrong: {', '.join(wrong)}" + (f"; right: {', '.join(right)}" if right else ""))
    low = [n for n in OUTPUTS if arrays[n].dtype.kind == "f" and arrays[n].dtype.itemsize < 8]
    if wrong and low:
        msgs.append(f"{', '.join(low)} came back in low precision ({arrays[low[0]].dtype}); the battery is float64, "
                    f"and float32 rounding alone can exceed the tolerance {PASS_TOL:g}")
    status = "fail" if (wrong or nonfinite or bad_shape) else "pass"
    return CaseResult(case, status, errors, "; ".join(msgs) if status == "fail" else "", ("ok", got), forward_wrong)


@lru_cache(maxsize=None)
def _bug_outcome(index: int, case: Case, ddof: int):
    """What fingerprint number `index` returns on this case: ("ok", arrays) or ("raised", exc)."""
    bug = FINGERPRINTS[index]
    x, gamma, beta, dy = case.data()
    _, cache = _book_forward(x, gamma, beta, case.eps, ddof)
    try:
        with np.errstate(all="ignore"):
            return ("ok", tuple(np.asarray(v, dtype=float) for v in bug.backward(dy, cache)))
    except Exception as exc:  # noqa: BLE001 - a bug that crashes on a shape is part of its fingerprint
        return ("raised", exc)


def _same(a, b) -> bool:
    """Two outcomes are the same: both raised, or the same shapes and values to MATCH_TOL."""
    if a[0] != b[0]:
        return False
    if a[0] == "raised":
        return True
    return all(u.shape == v.shape and np.all(np.isfinite(u)) and rel_error(u, v) <= MATCH_TOL
               for u, v in zip(a[1], b[1]))


def _differs_from_truth(outcome, true) -> bool:
    """True where a fingerprint can tell this bug from the right answer."""
    if outcome[0] != "ok":
        return True
    return not all(a.shape == t.shape and rel_error(a, t) <= PASS_TOL for a, t in zip(outcome[1], true))


def fingerprint(results: list[CaseResult], ddof: int) -> list[Bug]:
    """The planted bugs whose outputs equal the reader's on every 2-D case, and differ from the truth on one."""
    matched = []
    cases = [r for r in results if not r.case.nchw]
    if any(r.outcome is None for r in cases):
        return matched
    for index, bug in enumerate(FINGERPRINTS):
        if bug.harmless or bug.name in {b.name for b in matched}:
            continue
        discriminates = False
        for r in cases:
            theirs = _bug_outcome(index, r.case, ddof)
            if not _same(r.outcome, theirs):
                break
            discriminates |= _differs_from_truth(theirs, truth(r.case, ddof)[1])
        else:
            if discriminates:
                matched.append(bug)
    return matched


ESCAPES = {"timeout": "timed out", "crashed": "crashed", "exited": "exited", "refused": "refused"}


def verdict(head: dict, results: list[CaseResult], notes: list[str]) -> Report:
    """Timed out, crashed, exited, refused, correct, a named known mistake, not recognised, or could not run."""
    for status, word in ESCAPES.items():
        first = next((r for r in results if r.status == status), None)
        if first is not None:
            return Report(**head, results=results, verdict=word, notes=notes, problem=f"{first.message} (case {first.case.name})")
    flat = [r for r in results if not r.case.nchw]
    all_errors = all(r.status == "error" for r in flat)
    if any(r.case.nchw and r.status == "unsupported" for r in results) and not all_errors:
        notes.append("NCHW: your function does not support NCHW (4-D) input; that is not counted as a mistake.")
    bad_y = [r.case.name for r in results if r.forward_wrong]
    if bad_y:
        notes.append(f"your forward's output y is wrong in: {', '.join(bad_y)}. The backward is checked "
                     "against the true gradients of batch norm all the same.")
    if all(r.passed for r in results):
        return Report(**head, results=results, verdict="correct", notes=notes)
    if all_errors:
        same = len({r.message for r in flat}) == 1
        problem = f"{flat[0].message}, in every case" if same else "no case ran to the end; see the details"
        return Report(**head, results=results, verdict="could not run", notes=notes, problem=problem)
    matches = fingerprint(results, head["ddof"])
    return Report(**head, results=results, verdict="known mistake" if matches else "not recognised",
                  matches=matches, notes=notes)


__all__ = ["fingerprint", "judge_case", "truth", "verdict"]
