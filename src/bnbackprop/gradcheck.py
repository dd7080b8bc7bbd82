"""Gradient checking: central differences, a random-direction VJP check, and CS231n's relative error."""

from __future__ import annotations

from typing import Callable

import numpy as np


def rel_error(a, b) -> float:
    """CS231n's relative error: max|a - b| / max(1e-8, |a| + |b|), elementwise then the max."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs arrays of one shape; got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")  # NaN would compare False with every tolerance and pass as 'small'
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[np.ndarray], float], x, h: float = 1e-5) -> np.ndarray:
    """Central differences of a scalar function f at x, one coordinate at a time."""
    x = np.array(x, dtype=float)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        f_plus = f(x)
        x[i] = old - h
        f_minus = f(x)
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_jacobian(f: Callable[[np.ndarray], np.ndarray], x, h: float = 1e-5) -> np.ndarray:
    """Central-difference Jacobian of an array function: shape (f(x).size, x.size)."""
    x = np.array(x, dtype=float)
    cols = []
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = h
        step = step.reshape(x.shape)
        cols.append(((np.asarray(f(x + step)) - np.asarray(f(x - step))) / (2 * h)).ravel())
    return np.stack(cols, axis=1)


def vjp_directional_error(f, vjp, x, rng: np.random.Generator, h: float = 1e-6) -> float:
    """Relative gap between u . (f(x+hv) - f(x-hv))/2h and vjp(u) . v for random u and v."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(f(x))
    u = rng.standard_normal(y.shape)
    v = rng.standard_normal(x.shape)
    numeric = np.sum(u * (np.asarray(f(x + h * v)) - np.asarray(f(x - h * v)))) / (2 * h)
    analytic = np.sum(np.asarray(vjp(u)) * v)
    if not (np.isfinite(numeric) and np.isfinite(analytic)):
        return float("inf")
    return abs(numeric - analytic) / max(1e-8, abs(numeric) + abs(analytic))


def check_vjp(f, vjp, x, rng: np.random.Generator, tol: float = 1e-6, trials: int = 3, h: float = 1e-6) -> float:
    """Assert, in the style of HIPS autograd's check_vjp, that vjp matches f in random directions."""
    worst = max(vjp_directional_error(f, vjp, x, rng, h) for _ in range(trials))
    if not worst <= tol:  # also fails on NaN
        raise AssertionError(f"VJP disagrees with finite differences: relative error {worst:.3e} > {tol:.1e}")
    return worst


def scaled_error(a, b) -> float:
    """max|a - b| relative to the largest entry of a or b: immune to entries that cancel to near zero."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"scaled_error needs arrays of one shape; got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return float(np.max(np.abs(a - b), initial=0.0)) / scale if scale > 0 else 0.0


__all__ = ["check_vjp", "numerical_gradient", "numerical_jacobian", "rel_error", "scaled_error", "vjp_directional_error"]
