"""Judging the reader's outputs: the truth, per-case verdicts, fingerprints of known mistakes, the verdict."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..batchnorm import backward as _true_backward
from ..batchnorm import forward as _book_forward
from ..gradcheck import rel_error
from ..reference import autograd_backward
from .bugs import FINGERPRINTS, Bug
from .cases import CROSS_TOL, MATCH_TOL, OUTPUTS, PASS_TOL, Case
from .report import CaseResult, Report
from .runner import _BadReturn, _exc_text


def _outputs(value):
    """Check the reader's return value; return (arrays, problem). Shapes are compared later."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        n = len(value) if isinstance(value, (tuple, list)) else 1
        return None, f"returned {n} value(s) of type {type(value).__name__}; expected a tuple (dx, dgamma, dbeta)"
    arrays = []
    for name, v in zip(OUTPUTS, value):
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            return None, f"{name} is a {type(v).__name__}, not an array of numbers"
        arrays.append(a)
    return tuple(arrays), ""


def _shape_problem(arrays, want_shapes) -> str:
    """Which outputs have the wrong shape, or ''."""
    bad = [f"{n} has shape {a.shape}, expected {s}" for n, a, s in zip(OUTPUTS, arrays, want_shapes) if a.shape != s]
    return "; ".join(bad)


def _errors(arrays, truth) -> dict[str, float]:
    """CS231n's rel_error of each output against the truth; nan where the shapes differ."""
    return {n: (rel_error(a, t) if a.shape == t.shape else float("nan")) for n, a, t in zip(OUTPUTS, arrays, truth)}


@lru_cache(maxsize=None)
def _truth(case: Case, ddof: int):
    """The true (dx, dgamma, dbeta), from the compact backward, checked against HIPS autograd."""
    x, gamma, beta, dy = case.data()
    y, cache = _book_forward(x, gamma, beta, case.eps, ddof)
    truth = _true_backward(dy, cache)
    other = autograd_backward(dy, x, gamma, beta, case.eps, ddof)
    worst = max(rel_error(a, b) for a, b in zip(truth, other))
    if worst > CROSS_TOL:
        raise RuntimeError(f"grader self-check failed in case {case.name}: autograd differs by {worst:.1e}")
    return y, truth


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


def _differs_from_truth(outcome, truth) -> bool:
    """True where a fingerprint can tell this bug from the right answer."""
    if outcome[0] != "ok":
        return True
    return not all(a.shape == t.shape and rel_error(a, t) <= PASS_TOL for a, t in zip(outcome[1], truth))


def _judge(case: Case, outcome, y_reader, y_true, truth, stage: str, timeout: float) -> CaseResult:
    """Turn one outcome into a CaseResult with a message a student can act on."""
    want = tuple(t.shape for t in truth)
    where = "your forward" if stage == "forward" else "your backward"
    if outcome[0] == "skipped":
        return CaseResult(case, "skipped", message="not run: an earlier call never returned")
    if outcome[0] == "timeout":
        return CaseResult(case, "timeout", message=f"{where} did not return within {timeout:g} s")
    if outcome[0] == "raised":
        status = "unsupported" if case.nchw else "error"
        exc = outcome[1]
        msg = f"{where} {exc}" if isinstance(exc, _BadReturn) else f"{where} raised {_exc_text(exc)}"
        if case.nchw:
            msg = f"does not support NCHW input ({msg})"
        return CaseResult(case, status, message=msg, outcome=outcome)
    outcome_raw = outcome[1]
    arrays, problem = _outputs(outcome_raw)
    if problem:
        return CaseResult(case, "error", message=f"{where} {problem}")
    outcome = ("ok", arrays)
    shape_msg = _shape_problem(arrays, want)
    if shape_msg and case.nchw:
        return CaseResult(case, "unsupported", message=f"does not support NCHW input ({shape_msg})", outcome=outcome)
    errors = _errors(arrays, truth)
    msgs = [shape_msg] if shape_msg else []
    nonfinite = [n for n, a in zip(OUTPUTS, arrays) if not np.all(np.isfinite(a))]
    low = [n for n, v in zip(OUTPUTS, outcome_raw) if getattr(v, "dtype", np.dtype(float)).kind == "f" and v.dtype.itemsize < 8]
    if nonfinite:
        msgs.append(f"{', '.join(nonfinite)} contain(s) NaN or infinity")
    forward_wrong = y_reader is not None and (y_reader.shape != y_true.shape or not rel_error(y_reader, y_true) <= PASS_TOL)
    wrong = [n for n in OUTPUTS if not errors[n] <= PASS_TOL]
    if wrong and not shape_msg:
        right = [n for n in OUTPUTS if n not in wrong]
        msgs.append(f"wrong: {', '.join(wrong)}" + (f"; right: {', '.join(right)}" if right else ""))
    if wrong and low:
        msgs.append(f"{', '.join(low)} came back in low precision ({outcome_raw[OUTPUTS.index(low[0])].dtype}); "
                    f"the battery is float64, and float32 rounding alone can exceed the tolerance {PASS_TOL:g}")
    status = "fail" if (wrong or nonfinite or shape_msg) else "pass"
    return CaseResult(case, status, errors, "; ".join(msgs) if status == "fail" else "", outcome, forward_wrong)


def _fingerprint(results: list[CaseResult], ddof: int) -> list[Bug]:
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
            discriminates |= _differs_from_truth(theirs, _truth(r.case, ddof)[1])
        else:
            if discriminates:
                matched.append(bug)
    return matched


def _verdict(convention, ddof, forward, results, notes, hung="") -> Report:
    """Correct, a named known mistake, not recognised, or could not run."""
    flat = [r for r in results if not r.case.nchw]
    all_errors = all(r.status == "error" for r in flat)
    if any(r.case.nchw and r.status == "unsupported" for r in results) and not all_errors:
        notes.append("NCHW: your function does not support NCHW (4-D) input; that is not counted as a mistake.")
    bad_y = [r.case.name for r in results if r.forward_wrong]
    if bad_y:
        notes.append(f"your forward's output y is wrong in: {', '.join(bad_y)}. The backward is checked "
                     "against the true gradients of batch norm all the same.")
    if all(r.passed for r in results):
        return Report(convention, ddof, forward, results, "correct", notes=notes)
    if hung:
        problem = f"{hung}; the remaining cases were not run"
        return Report(convention, ddof, forward, results, "could not run", notes=notes, problem=problem)
    if all_errors:
        same = len({r.message for r in flat}) == 1
        problem = f"{flat[0].message}, in every case" if same else "no case ran to the end; see the details"
        return Report(convention, ddof, forward, results, "could not run", notes=notes, problem=problem)
    matches = _fingerprint(results, ddof)
    verdict = "known mistake" if matches else "not recognised"
    return Report(convention, ddof, forward, results, verdict, matches, notes)
