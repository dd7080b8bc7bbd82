"""Check a reader's batch-norm backward on a battery of cases, and name the mistake when it is a known one.

`diagnose(backward_fn, convention=...)` accepts two calling conventions:

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
planted bug in `bnbackprop.bugs.BUGS` (and in `FINGERPRINTS`, which adds other spellings of the
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

import html
import inspect
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from .batchnorm import _param_grads
from .batchnorm import backward as _true_backward
from .batchnorm import forward as _book_forward
from .bugs import BUGS, Bug, _dx
from .gradcheck import rel_error
from .reference import autograd_backward

PASS_TOL = 1e-7  # right answer: CS231n expects 1e-8 or less even from finite differences
MATCH_TOL = 1e-8  # a planted bug is named when the reader's outputs equal its outputs to this
CROSS_TOL = 1e-9  # the truth and autograd must agree to this, or the grader itself is broken
OUTPUTS = ("dx", "dgamma", "dbeta")
CONVENTIONS = {
    "cs231n": "backward(dout, cache) -> (dx, dgamma, dbeta)",
    "plain": "backward(x, gamma, beta, dy, eps) -> (dx, dgamma, dbeta)",
}


@dataclass(frozen=True)
class Case:
    """One input of the battery: shape, eps, the data's offset and scale, and why it is there."""

    name: str
    shape: tuple[int, ...]
    eps: float
    offset: float
    scale: float
    seed: int
    why: str

    @property
    def nchw(self) -> bool:
        """True for 4-D input, which a 2-D-only implementation may legitimately refuse."""
        return len(self.shape) > 2

    def data(self):
        """x, gamma, beta and dy: non-zero means, random gamma and beta, float64."""
        rng = np.random.default_rng(self.seed)
        C = self.shape[1]
        x = self.scale * rng.standard_normal(self.shape) + self.offset
        gamma = rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C)
        beta = rng.standard_normal(C)
        dy = rng.standard_normal(self.shape)
        return x, gamma, beta, dy


CASES = (
    Case("basic", (6, 4), 1e-5, 10.0, 4.0, 101, "non-square (N, D), mean 10, random gamma"),
    Case("wide", (3, 8), 1e-5, -3.0, 2.0, 102, "fewer rows than columns"),
    Case("square", (5, 5), 1e-5, 2.0, 1.5, 103, "square: some axis mistakes only run here"),
    Case("eps0", (7, 3), 0.0, 5.0, 3.0, 104, "eps = 0"),
    Case("eps_large", (8, 3), 0.1, 1.0, 0.5, 105, "eps = 0.1 against a variance near 0.25"),
    Case("B2", (2, 5), 1e-3, 4.0, 2.0, 106, "a batch of two: xhat is nearly +-1 and dx nearly 0"),
    Case("nchw", (4, 3, 2, 5), 1e-5, 3.0, 2.0, 107, "(N, C, H, W): statistics over N, H, W"),
)


def _wrong_axis_keepdims(dy, cache):
    """The wrong axis with keepdims=True: it runs on every shape, so no broadcast error gives it away."""
    g = cache.gamma * dy
    mean_g = g.mean(axis=1, keepdims=True)
    proj = (g * cache.xhat).mean(axis=1, keepdims=True)
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s), *_param_grads(dy, cache))


def _variant(name: str, backward_fn: Callable) -> Bug:
    """Another way to write a registered mistake: same name, explanation and section."""
    bug = BUGS[name]
    return Bug(bug.name, backward_fn, bug.explanation, bug.section, bug.harmless)


# Fingerprints: every planted bug, plus other common spellings of the same mistakes.
FINGERPRINTS: tuple[Bug, ...] = (*BUGS.values(), _variant("wrong_axis", _wrong_axis_keepdims))


@dataclass
class CaseResult:
    """What happened in one case: the status, relative errors per output, and a message."""

    case: Case
    status: str  # "pass", "fail", "error", "timeout", "unsupported", "skipped"
    errors: dict[str, float] = field(default_factory=dict)
    message: str = ""
    outcome: Any = None  # ("ok", (dx, dgamma, dbeta)) or ("raised", exception) or None
    forward_wrong: bool = False  # the reader's own forward returned a wrong y here

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "unsupported")


@dataclass
class Report:
    """The grader's verdict: per-case results, the named mistake if one matched, and notes."""

    convention: str
    ddof: int
    forward: str
    results: list[CaseResult]
    verdict: str  # "correct", "known mistake", "not recognised", "could not run"
    matches: list[Bug] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str = ""

    @property
    def passed(self) -> bool:
        """True when every case that ran gave the right dx, dgamma and dbeta (and y, from your forward)."""
        return self.verdict == "correct" and not any(r.forward_wrong for r in self.results)

    @property
    def failing(self) -> list[str]:
        """Names of the cases that did not pass."""
        return [r.case.name for r in self.results if not r.passed]

    def headline(self) -> str:
        """One line: the verdict in words."""
        if self.verdict == "correct" and any(r.forward_wrong for r in self.results):
            return "BACKWARD CORRECT, FORWARD WRONG: dx, dgamma and dbeta are right, but your forward's y is not (see the notes)."
        if self.verdict == "correct" and any(r.status == "unsupported" for r in self.results):
            return "CORRECT: dx, dgamma and dbeta match the true gradients in every case it supports."
        if self.verdict == "correct":
            return "CORRECT: dx, dgamma and dbeta match the true gradients in every case."
        if self.verdict == "known mistake":
            names = " or ".join(b.name for b in self.matches)
            return f"WRONG, known mistake: {names}."
        if self.verdict == "could not run":
            return f"COULD NOT CHECK: {self.problem}"
        return "WRONG, cause not recognised: the outputs match no known mistake. Failing cases: " + ", ".join(self.failing) + "."

    def evidence(self) -> str:
        """Why the mistake was named: on which cases the reader's function behaved exactly like it."""
        flat = [r for r in self.results if not r.case.nchw]
        raised = sum(r.outcome is not None and r.outcome[0] == "raised" for r in flat)
        text = (f"your function behaves exactly like this planted mistake in all {len(flat)} 2-D cases: "
                f"the same dx, dgamma and dbeta to a relative error of {MATCH_TOL:g}")
        if raised:
            text += f" in {len(flat) - raised}, and an exception where it raises one in {raised}"
        return text

    def _mistake_lines(self) -> list[str]:
        lines = []
        for bug in self.matches:
            lines += [f"  {bug.name}: {bug.explanation}", f"  Read: {bug.section}."]
        if self.matches:
            lines.append(f"  ({self.evidence()})")
        if len(self.matches) > 1:
            lines.append("  These mistakes give identical outputs on this battery; it cannot tell them apart.")
        return lines

    def _table_rows(self) -> list[tuple[str, ...]]:
        rows = []
        for r in self.results:
            errs = [_fmt_err(r.errors[k]) if k in r.errors else "-" for k in OUTPUTS]
            rows.append((r.case.name, str(r.case.shape), f"{r.case.eps:g}", r.status.upper(), *errs))
        return rows

    def __str__(self) -> str:
        head = ("case", "shape", "eps", "result", "dx", "dgamma", "dbeta")
        rows = [head, *self._table_rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            f"bnbackprop.diagnose: convention '{self.convention}', {CONVENTIONS[self.convention]}",
            f"forward: {self.forward}; variance {_ddof_words(self.ddof)}",
            "",
            self.headline(),
            *self._mistake_lines(),
        ]
        if self.results:
            lines += ["", "relative errors (CS231n rel_error) against the true gradients:"]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        details = [f"  {r.case.name}: {r.message}" for r in self.results if r.message]
        if details:
            lines += ["", "details:", *details]
        if self.notes:
            lines += ["", "notes:", *[f"  {n}" for n in self.notes]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        names = ",".join(b.name for b in self.matches)
        return f"Report(verdict={self.verdict!r}, matches=[{names}], failing={self.failing})"

    def _repr_html_(self) -> str:
        """The report as an HTML table, for notebooks and the HTML book."""
        esc = html.escape
        head = "".join(f"<th>{h}</th>" for h in ("case", "shape", "eps", "result", *OUTPUTS))
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in self._table_rows())
        items = [f"<li><code>{esc(b.name)}</code>: {esc(b.explanation)} Read: {esc(b.section)}.</li>" for b in self.matches]
        items += [f"<li>Why: {esc(self.evidence())}.</li>" for _ in self.matches[:1]]
        items += [f"<li><code>{esc(r.case.name)}</code>: {esc(r.message)}</li>" for r in self.results if r.message]
        items += [f"<li>{esc(n)}</li>" for n in self.notes]
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if self.results else ""
        return f"<p><strong>{esc(self.headline())}</strong></p>{table}<ul>{''.join(items)}</ul>"


def _fmt_err(e: float) -> str:
    """Relative errors below 1e-12 are rounding; print them alike so reports stay repeatable."""
    if np.isnan(e):
        return "shape"  # rel_error is undefined between arrays of different shapes
    return "<1e-12" if e < 1e-12 else f"{e:.1e}"


def _ddof_words(ddof: int) -> str:
    """Which variance, in words."""
    return "biased, divided by B (ddof=0)" if ddof == 0 else "Bessel-corrected, divided by B - 1 (ddof=1)"


def call_with_timeout(fn: Callable, args: tuple, timeout: float):
    """Run fn(*args) in a daemon thread; return ("ok", value), ("raised", exc) or ("timeout", None)."""
    box: dict[str, Any] = {}

    def target():
        try:
            with np.errstate(all="ignore"):
                box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the reader's SystemExit is a finding too
            box["error"] = exc

    thread = threading.Thread(target=target, name="bnbackprop-diagnose", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return ("timeout", None)
    if "error" in box:
        return ("raised", box["error"])
    return ("ok", box["value"])


def _signature_problem(fn: Callable, args: tuple, expected: str) -> str:
    """A message if fn cannot be called with these positional arguments, else ''."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ""  # builtins without a signature: just call them
    try:
        sig.bind(*args)
    except TypeError as exc:
        name = getattr(fn, "__name__", "your function")
        return f"wrong signature: {name}{sig} cannot be called as {expected} ({exc})"
    return ""


def _exc_text(exc: BaseException) -> str:
    """'Type: first line of the message', short enough for one line of the report."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


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


class _BadReturn(Exception):
    """The reader's forward returned something other than (out, cache)."""


def _as_float(v) -> np.ndarray:
    """The reader's y as a float array; a 0-d NaN when it is not numbers, so it counts as wrong."""
    try:
        return np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return np.full((), np.nan)


class _Runner:
    """Calls the reader's functions case by case, stopping after the first call that hangs."""

    def __init__(self, backward_fn, convention, forward_fn, timeout):
        self.backward_fn, self.convention, self.forward_fn, self.timeout = backward_fn, convention, forward_fn, timeout
        self.hung = ""

    def forward_args(self, case, x, gamma, beta):
        """CS231n's bn_param dict, or eps itself when the forward's fourth parameter is named eps."""
        try:
            params = list(inspect.signature(self.forward_fn).parameters)
        except (TypeError, ValueError):
            params = []
        fourth = params[3] if len(params) > 3 else "bn_param"
        extra = case.eps if fourth == "eps" else {"mode": "train", "eps": case.eps}
        return (x, gamma, beta, extra)

    def call(self, fn, args, what):
        """One guarded call; after a timeout nothing else is called."""
        if self.hung:
            return ("skipped", None)
        outcome = call_with_timeout(fn, args, self.timeout)
        if outcome[0] == "timeout":
            self.hung = what
        return outcome

    def run(self, case: Case, ddof: int):
        """Return (outcome of the backward, forward's y or None, message about the forward)."""
        x, gamma, beta, dy = case.data()
        if self.convention == "plain":
            return self.call(self.backward_fn, (x, gamma, beta, dy, case.eps), "backward"), None, ""
        if self.forward_fn is None:
            _, cache = _book_forward(x, gamma, beta, case.eps, ddof)
            return self.call(self.backward_fn, (dy, cache), "backward"), None, ""
        fwd = self.call(self.forward_fn, self.forward_args(case, x, gamma, beta), "forward")
        if fwd[0] != "ok":
            return fwd, None, "forward"
        value = fwd[1]
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            return ("raised", _BadReturn(f"returned a {type(value).__name__}; expected a pair (out, cache)")), None, "forward"
        return self.call(self.backward_fn, (dy, value[1]), "backward"), _as_float(value[0]), ""


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


def _detect_ddof(runner: _Runner, notes: list[str]) -> int | None:
    """Which variance the reader's forward divides by, read off its output on the first case."""
    case = CASES[0]
    x, gamma, beta, _ = case.data()
    fwd = runner.call(runner.forward_fn, runner.forward_args(case, x, gamma, beta), "forward")
    if fwd[0] != "ok" or not isinstance(fwd[1], (tuple, list)) or len(fwd[1]) != 2:
        return None
    y = _as_float(fwd[1][0])
    for ddof in (0, 1):
        y_true, _ = _book_forward(x, gamma, beta, case.eps, ddof)
        if y.shape == y_true.shape and rel_error(y, y_true) <= PASS_TOL:
            return ddof
    notes.append("your forward's output matches neither the biased nor the Bessel-corrected batch norm")
    return None


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


def _resolve_ddof(runner, ddof, notes) -> int:
    """The ddof asked for, else the one the reader's forward uses, else 0."""
    if runner.forward_fn is None:
        return 0 if ddof is None else ddof
    found = _detect_ddof(runner, notes)
    if ddof is not None and found is not None and found != ddof:
        notes.append(f"you passed ddof={ddof}, but your forward's output says ddof={found}; using ddof={ddof}")
    return ddof if ddof is not None else (found if found is not None else 0)


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


__all__ = ["CASES", "FINGERPRINTS", "Case", "CaseResult", "Report", "call_with_timeout", "diagnose"]
