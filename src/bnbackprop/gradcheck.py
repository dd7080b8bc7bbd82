"""Gradient checking: central differences, a random-direction VJP check, and CS231n's relative error."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._validate import real_array


def _check_step(h) -> float:
    """The finite-difference step: a finite number > 0."""
    if isinstance(h, (bool, np.bool_)) or not isinstance(h, (int, float, np.integer, np.floating)):
        raise TypeError(f"h, the finite-difference step, must be a number like 1e-5; got {type(h).__name__} {h!r}")
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"h, the finite-difference step, must be a finite number > 0; got {h!r}")
    return float(h)


def _check_rng(rng) -> np.random.Generator:
    """Random directions come from a numpy Generator."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, like np.random.default_rng(0); got {type(rng).__name__}")
    return rng


def _pair(a, b, who: str):
    """Two real arrays of one shape."""
    a, b = real_array(a, "a"), real_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"{who} needs arrays of one shape; got {a.shape} and {b.shape}")
    return a, b


def rel_error(a, b) -> float:
    """CS231n's relative error: max|a - b| / max(1e-8, |a| + |b|), elementwise then the max."""
    a, b = _pair(a, b, "rel_error")
    if a.size == 0:
        raise ValueError("rel_error needs non-empty arrays a and b; got shape " + str(a.shape))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")  # NaN would compare False with every tolerance and pass as 'small'
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[np.ndarray], float], x, h: float = 1e-5) -> np.ndarray:
    """Central differences of a scalar function f at x, one coordinate at a time."""
    x, h = np.array(real_array(x, "x")), _check_step(h)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        f_plus = _scalar(f(x))
        x[i] = old - h
        f_minus = _scalar(f(x))
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def _scalar(v) -> float:
    """f's value, which must be one real number."""
    arr = real_array(v, "f(x)")
    if arr.size != 1:
        raise ValueError(f"f must return a scalar; it returned shape {arr.shape}: use numerical_jacobian for an array-valued f")
    return float(arr.reshape(()))


def numerical_jacobian(f: Callable[[np.ndarray], np.ndarray], x, h: float = 1e-5) -> np.ndarray:
    """Central-difference Jacobian of an array function: shape (f(x).size, x.size)."""
    x, h = real_array(x, "x"), _check_step(h)
    if x.size == 0:
        raise ValueError(f"x must hold at least one value to differentiate with respect to; got shape {x.shape}")
    cols = []
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = h
        step = step.reshape(x.shape)
        cols.append(((real_array(f(x + step), "f(x)") - real_array(f(x - step), "f(x)")) / (2 * h)).ravel())
    return np.stack(cols, axis=1)


def vjp_directional_error(f, vjp, x, rng: np.random.Generator, h: float = 1e-6) -> float:
    """Relative gap between u . (f(x+hv) - f(x-hv))/2h and vjp(u) . v for random u and v."""
    x, rng, h = real_array(x, "x"), _check_rng(rng), _check_step(h)
    y = real_array(f(x), "f(x)")
    u = rng.standard_normal(y.shape)
    v = rng.standard_normal(x.shape)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite gap is reported as inf below
        numeric = np.sum(u * (real_array(f(x + h * v), "f(x)") - real_array(f(x - h * v), "f(x)"))) / (2 * h)
        analytic = np.sum(real_array(vjp(u), "vjp(u)") * v)
    if not (np.isfinite(numeric) and np.isfinite(analytic)):
        return float("inf")
    return abs(numeric - analytic) / max(1e-8, abs(numeric) + abs(analytic))


def check_vjp(f, vjp, x, rng: np.random.Generator, tol: float = 1e-6, trials: int = 3, h: float = 1e-6) -> float:
    """Assert, in the style of HIPS autograd's check_vjp, that vjp matches f in random directions."""
    if isinstance(trials, (bool, np.bool_)) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be a positive integer; got {trials!r}")
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.integer, np.floating)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0; got {tol!r}")
    worst = max(vjp_directional_error(f, vjp, x, rng, h) for _ in range(trials))
    if not worst <= tol:  # also fails on NaN
        raise AssertionError(f"VJP disagrees with finite differences: relative error {worst:.3e} > {tol:.1e}")
    return worst


def scaled_error(a, b) -> float:
    """max|a - b| relative to the largest entry of a or b: immune to entries that cancel to near zero."""
    a, b = _pair(a, b, "scaled_error")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return float(np.max(np.abs(a - b), initial=0.0)) / scale if scale > 0 else 0.0


__all__ = ["check_vjp", "numerical_gradient", "numerical_jacobian", "rel_error", "scaled_error", "vjp_directional_error"]
