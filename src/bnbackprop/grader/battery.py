"""Friendly and hostile checks for a hand-written batch-norm backward: which ones catch which bug.

A check is one test a person might write: an input batch (shape, mean, gamma, eps, ddof, dy) and
what it compares (every gradient, dx only, shapes only, or the property sum(dx) = 0). The
friendly checks are the convenient choices that real test suites made; each hostile check is
built so that one family of mistakes cannot hide. A backward takes `(dy, cache)` like
`bnbackprop.backward`, with the cache from `bnbackprop.forward`; the reference gradients come
from HIPS autograd (`bnbackprop.reference`), which shares no code with the book's backward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .._validate import reduce_axes
from ..batches import random_batch
from ..batchnorm import forward
from ..reference import autograd_backward

COMPARES = ("all", "dx", "shapes", "sum_dx")


@dataclass(frozen=True)
class Check:
    """One test of a backward: the input it builds and what it compares."""

    name: str
    friendly: bool
    description: str
    shape: tuple[int, ...] = (7, 3)
    offset: float = 12.0  # mean of x, before per-channel shifts of size scale
    scale: float = 0.1
    zero_mean: bool = False
    gamma_one: bool = False
    gamma_spread: float = 0.0  # > 0: gamma = 1 + gamma_spread * noise, near its initial value
    eps: float = 1e-3
    ddof: int = 1
    dy_ones: bool = False
    compare: str = "all"
    tol: float = 1e-9


@dataclass(frozen=True)
class Outcome:
    """What one check said about one backward: caught or not, why, and the worst relative error."""

    check: str
    caught: bool
    reason: str
    error: float


# The hostile baseline: non-square, far from zero mean, random gamma of both signs, eps of the
# size of the variance (so eps's place matters), Bessel's correction, random dy, every gradient.
HOSTILE = Check("hostile", False, "non-square (7, 3), mean 12, var 0.01, random gamma and beta, "
                "eps = 1e-3, ddof = 1, random dy; compares dx, dgamma and dbeta")


def _variant(name, friendly, description, **changes) -> Check:
    """The hostile baseline with some choices changed."""
    return replace(HOSTILE, name=name, friendly=friendly, description=description, **changes)


CHECKS: tuple[Check, ...] = (
    _variant("square_smoke", True, "a square (4, 4) batch; passes if it runs and returns the right shapes",
             shape=(4, 4), compare="shapes"),
    _variant("sum_of_y", True, "loss = sum(y), so dy = 1 everywhere (HomericIntelligence/Odyssey #3174)", dy_ones=True),
    _variant("sum_dx_zero", True, "only the property sum(dx) = 0 over the batch", compare="sum_dx"),
    _variant("gamma_one", True, "gamma = 1 and beta = 0, as at initialisation", gamma_one=True),
    _variant("zero_mean", True, "x centred exactly: every channel has mean 0", zero_mean=True, offset=0.0),
    _variant("eps_zero", True, "eps = 0", eps=0.0),
    _variant("biased_only", True, "only the biased variance, ddof = 0", ddof=0),
    _variant("dx_only", True, "compares dx but not dgamma and dbeta", compare="dx"),
    HOSTILE,
    _variant("hostile_biased", False, "the hostile baseline with ddof = 0", ddof=0),
    _variant("hostile_nchw", False, "the hostile baseline on an NCHW batch of shape (3, 2, 4, 5)",
             shape=(3, 2, 4, 5)),
    _variant("hostile_b2", False, "B = 2 and eps = 0, where the true dx is exactly 0",
             shape=(2, 3), eps=0.0, ddof=0),
)

CHECKS_BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}


def make_case(check: Check, seed: int = 0):
    """The check's input: (x, gamma, beta, dy), all float64, from a seeded generator."""
    _require_check(check)
    x, gamma, beta, dy = random_batch(seed, check.shape, check.scale, check.offset, gamma_spread=check.gamma_spread)
    C = check.shape[1]
    if check.zero_mean:
        x = x - x.mean(axis=reduce_axes(x.ndim), keepdims=True)
    if check.gamma_one:  # a gamma drawn near 1 (gamma_spread > 0) stays; beta is 0 either way
        gamma, beta = (gamma if check.gamma_spread > 0 else np.ones(C)), np.zeros(C)
    if check.dy_ones:
        dy = np.ones(check.shape)
    return x, gamma, beta, dy


def run_check(backward: Callable, check: Check | str, seed: int = 0) -> Outcome:
    """Run one check on a `(dy, cache) -> (dx, dgamma, dbeta)` backward; an exception counts as caught."""
    check = CHECKS_BY_NAME[check] if isinstance(check, str) and check in CHECKS_BY_NAME else check
    _require_check(check)
    if not callable(backward):
        raise ValueError(f"backward must be a function (dy, cache) -> (dx, dgamma, dbeta); got {backward!r}")
    x, gamma, beta, dy = make_case(check, seed)
    _, cache = forward(x, gamma, beta, eps=check.eps, ddof=check.ddof)
    try:
        got = backward(dy, cache)
    except Exception as exc:  # a crash is a failed test: the check caught the bug
        return Outcome(check.name, True, f"raised {type(exc).__name__}: {exc}", np.inf)
    want = autograd_backward(dy, x, gamma, beta, eps=check.eps, ddof=check.ddof)
    return _compare(check, got, want, term_scales(dy, cache))


def term_scales(dy, cache) -> tuple[float, float, float]:
    """The size of the terms each gradient sums: max |g| / s for dx, sum |dy xhat| and sum |dy| per channel.

    The true gradient can be exactly 0 (dy = 1, or B = 2 at eps = 0), where an elementwise relative
    error measures rounding noise only; an error relative to the terms that cancel does not.
    """
    axes = cache.param_axes
    dx_scale = float(np.max(np.abs(cache.gamma * dy) * cache.inv_s))
    dgamma_scale = float(np.max(np.abs(dy * cache.xhat).sum(axis=axes)))
    dbeta_scale = float(np.max(np.abs(dy).sum(axis=axes)))
    return dx_scale, dgamma_scale, dbeta_scale


def term_error(got, want, scale: float) -> float:
    """max |got - want| over the size of the terms behind want."""
    return float(np.max(np.abs(got - want))) / max(scale, np.finfo(float).tiny)


def _compare(check: Check, got, want, scales) -> Outcome:
    """Judge the returned gradients the way the check's test would."""
    if not isinstance(got, tuple) or len(got) != 3:
        return Outcome(check.name, True, "did not return a tuple (dx, dgamma, dbeta)", np.inf)
    names = ("dx", "dgamma", "dbeta")
    judged = 1 if check.compare in ("dx", "sum_dx") else 3  # a dx-only test never looks at the rest
    got = tuple(np.asarray(g, dtype=float) for g in got[:judged])
    for name, g, w in zip(names, got, want):
        if g.shape != w.shape:
            return Outcome(check.name, True, f"{name} has shape {g.shape}, expected {w.shape}", np.inf)
        if not np.all(np.isfinite(g)):
            return Outcome(check.name, True, f"{name} holds NaN or infinity", np.inf)
    if check.compare == "shapes":
        return Outcome(check.name, False, "ran; right shapes", 0.0)
    if check.compare == "sum_dx":
        axes = (0,) + tuple(range(2, got[0].ndim))
        err = term_error(got[0].sum(axis=axes), 0.0, scales[0] * got[0].size)
        return Outcome(check.name, err > check.tol, f"sum(dx) off 0 by {err:.1e} of the terms", err)
    errors = {name: term_error(g, w, sc) for name, g, w, sc in zip(names, got, want, scales)}
    worst = max(errors, key=errors.get)
    caught = errors[worst] > check.tol
    return Outcome(check.name, caught, f"worst: {worst}, error {errors[worst]:.1e} of the terms", errors[worst])


def _require_check(check) -> None:
    """A Check, or a name from CHECKS."""
    if not isinstance(check, Check):
        raise ValueError(f"check must be a Check or one of {sorted(CHECKS_BY_NAME)}; got {check!r}")
    if check.compare not in COMPARES:
        raise ValueError(f"check {check.name!r}: compare must be one of {COMPARES}; got {check.compare!r}")


def run_battery(backward: Callable, checks=CHECKS, seed: int = 0) -> dict[str, Outcome]:
    """Every check on one backward: {check name: Outcome}."""
    return {c.name: run_check(backward, c, seed) for c in _as_checks(checks)}


def _as_checks(checks) -> tuple[Check, ...]:
    """Names or Check objects, at least one."""
    out = tuple(CHECKS_BY_NAME.get(c, c) if isinstance(c, str) else c for c in checks)
    if not out:
        raise ValueError("checks must name at least one check")
    for c in out:
        _require_check(c)
    return out


def caught_table(backwards: dict[str, Callable], checks=CHECKS, seed: int = 0) -> dict[str, dict[str, bool]]:
    """{backward name: {check name: caught?}} for several backwards."""
    if not isinstance(backwards, dict) or not backwards:
        raise ValueError("backwards must be a non-empty dict {name: (dy, cache) -> (dx, dgamma, dbeta)}")
    return {name: {k: o.caught for k, o in run_battery(fn, checks, seed).items()} for name, fn in backwards.items()}


def missed_by(table: dict[str, dict[str, bool]], name: str) -> list[str]:
    """The checks that let the named backward pass."""
    if name not in table:
        raise ValueError(f"{name!r} is not a row of the table; rows are {sorted(table)}")
    return [check for check, caught in table[name].items() if not caught]


def catch_rate(backward: Callable, check: Check | str, seeds) -> float:
    """Fraction of seeds for which the check catches the backward: how 'occasional' a failure is."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    return sum(run_check(backward, check, s).caught for s in seeds) / len(seeds)


def caught_markdown(table: dict[str, dict[str, bool]], mark: str = "caught", blank: str = "·") -> str:
    """Render a caught table as Markdown: rows are backwards, columns checks, friendly ones marked *."""
    if not table:
        raise ValueError("table must have at least one row")
    cols = list(next(iter(table.values())))
    head = [f"`{c}`{'*' if CHECKS_BY_NAME.get(c, HOSTILE).friendly else ''}" for c in cols]
    lines = ["| backward | " + " | ".join(head) + " |", "| --- |" + " :-: |" * len(cols)]
    for name, row in table.items():
        lines.append(f"| `{name}` | " + " | ".join(mark if row[c] else blank for c in cols) + " |")
    return "\n".join(lines)


__all__ = [
    "CHECKS",
    "CHECKS_BY_NAME",
    "COMPARES",
    "HOSTILE",
    "Check",
    "Outcome",
    "catch_rate",
    "caught_markdown",
    "caught_table",
    "make_case",
    "missed_by",
    "run_battery",
    "run_check",
    "term_error",
    "term_scales",
]
