"""Calling the reader's functions: one guarded call at a time, with a timeout, case by case."""

from __future__ import annotations

import inspect
import threading
from typing import Any, Callable

import numpy as np

from ..batchnorm import forward as _book_forward
from ..gradcheck import rel_error
from .cases import CASES, PASS_TOL, Case


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


def _resolve_ddof(runner, ddof, notes) -> int:
    """The ddof asked for, else the one the reader's forward uses, else 0."""
    if runner.forward_fn is None:
        return 0 if ddof is None else ddof
    found = _detect_ddof(runner, notes)
    if ddof is not None and found is not None and found != ddof:
        notes.append(f"you passed ddof={ddof}, but your forward's output says ddof={found}; using ddof={ddof}")
    return ddof if ddof is not None else (found if found is not None else 0)
