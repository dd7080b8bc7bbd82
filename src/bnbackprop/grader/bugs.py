"""The bug registry: wrong (and two harmless) batch-norm backwards, each a one-place change to the right one.

Each bug has the signature of `bnbackprop.backward`, `(dy, cache) -> (dx, dgamma, dbeta)`. A bug
with `sources` is the mistake as that thread states it (links in `Bug.sources`); one without is
planted: a slip the book shows, not a claim about any library. The book's bugs chapter, the grader
(`bnbackprop.grader`) and the tests all use these same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..batchnorm import param_grads


def _dx(g, mean_g, xhat, proj, inv_s):
    """The compact formula's shape: dx = (g - mean_g - xhat * proj) * inv_s."""
    return (g - mean_g - xhat * proj) * inv_s


def _parts(dy, cache, g=None):
    """g (gamma * dy unless given), mean(g), and the projection coefficient sum(g*xhat)/(B - ddof)."""
    g = cache.gamma * dy if g is None else g
    mean_g = g.mean(axis=cache.axes, keepdims=True)
    proj = (g * cache.xhat).sum(axis=cache.axes, keepdims=True) / (cache.B - cache.ddof)
    return g, mean_g, proj


def gamma_dropped(dy, cache):
    """Knet.jl #288: gamma left out of dx, so g = dy. Invisible whenever tests use gamma = 1."""
    g, mean_g, proj = _parts(dy, cache, g=dy)
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s), *param_grads(dy, cache))


def wrong_axis(dy, cache):
    """Planted numpy slip: means taken over axis 1 without keepdims; only a square (N, N) input even runs."""
    g = cache.gamma * dy
    mean_g = g.mean(axis=1)
    proj = (g * cache.xhat).mean(axis=1)
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s), *param_grads(dy, cache))


def variance_term_dropped(dy, cache):
    """Planted: the path through the variance is missing, so dx = (g - mean(g)) / s."""
    g, mean_g, _ = _parts(dy, cache)
    return (_dx(g, mean_g, cache.xhat, 0.0, cache.inv_s), *param_grads(dy, cache))


def mean_via_variance_dropped(dy, cache):
    """darknet (issues #1634, #1723), mlpack #2474, in the paper's staged form: dmu without the variance's share. Harmless: that share is a multiple of sum(x - mu) = 0."""
    axes, B, ddof, inv_s = cache.axes, cache.B, cache.ddof, cache.inv_s
    dxhat = cache.gamma * dy
    dvar = -0.5 * (dxhat * cache.xmu).sum(axis=axes, keepdims=True) * inv_s**3
    # The full dmu would add dvar * sum(-2 * xmu) / (B - ddof); that sum is 0 up to rounding.
    dmu = -(dxhat * inv_s).sum(axis=axes, keepdims=True)
    dx = dxhat * inv_s + dvar * 2.0 * cache.xmu / (B - ddof) + dmu / B
    return (dx, *param_grads(dy, cache))


def mean_via_variance_misrestored(dy, cache):
    """A tempting 'fix' of that term: -2 * xmu_i * dvar / B added to dmu per element instead of summed (so 0)."""
    g, mean_g, proj = _parts(dy, cache)
    dvar = -0.5 * proj * (cache.B - cache.ddof) * cache.inv_s**2  # the true dL/dvar
    dmu_extra = -2.0 * cache.xmu * dvar / cache.B
    # dmu reaches every x_j divided by B, so the per-element 'term' arrives as dmu_extra / B.
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s) + dmu_extra / cache.B, *param_grads(dy, cache))


def mean_and_variance_paths_dropped(dy, cache):
    """DL4J #8335: dL/dIn kept only the direct term, dx = gamma * dy / s, without the mean's and the variance's."""
    return (cache.gamma * dy * cache.inv_s, *param_grads(dy, cache))


def wrong_count(dy, cache):
    """RubixML #423: the backward divides by the feature count D where the batch size B belongs."""
    g = cache.gamma * dy
    D = dy.shape[1]
    mean_g = g.sum(axis=cache.axes, keepdims=True) / D
    proj = (g * cache.xhat).sum(axis=cache.axes, keepdims=True) / (D - cache.ddof)
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s), *param_grads(dy, cache))


def mean_via_variance_kept(dy, cache):
    """MXNet #1053: the staged backward with the variance's term into mu kept (gmean += tmp); it is 0, so harmless."""
    axes, B, ddof, inv_s = cache.axes, cache.B, cache.ddof, cache.inv_s
    dxhat = cache.gamma * dy
    dvar = -0.5 * (dxhat * cache.xmu).sum(axis=axes, keepdims=True) * inv_s**3
    tmp = dvar * (-2.0 * cache.xmu).sum(axis=axes, keepdims=True) / (B - ddof)
    dmu = -(dxhat * inv_s).sum(axis=axes, keepdims=True) + tmp
    dx = dxhat * inv_s + dvar * 2.0 * cache.xmu / (B - ddof) + dmu / B
    return (dx, *param_grads(dy, cache))


def bessel_mismatch(dy, cache):
    """The biased formula, mean(g * xhat), on a Bessel (ddof=1) forward: the n/(n-1) factor is lost."""
    g, mean_g, _ = _parts(dy, cache)
    proj = (g * cache.xhat).mean(axis=cache.axes, keepdims=True)
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s), *param_grads(dy, cache))


def eps_outside_sqrt(dy, cache):
    """s computed as sqrt(var) + eps instead of sqrt(var + eps): dx scaled by about 1 - eps/sigma + eps/(2 var)."""
    g, mean_g, proj = _parts(dy, cache)
    inv_s = 1.0 / (np.sqrt(cache.var) + cache.eps)
    return (_dx(g, mean_g, cache.xhat, proj, inv_s), *param_grads(dy, cache))


def missing_inv_n(dy, cache):
    """The 1/B of d mu / d x_j forgotten (the seed answer's 'dmu/dx = 1'): mean(g) becomes sum(g)."""
    g, _, proj = _parts(dy, cache)
    return (_dx(g, g.sum(axis=cache.axes, keepdims=True), cache.xhat, proj, cache.inv_s), *param_grads(dy, cache))


def param_grads_wrong_axis(dy, cache):
    """dgamma and dbeta summed over the channel axis instead of the batch: right dx, wrong dgamma/dbeta."""
    g, mean_g, proj = _parts(dy, cache)
    dbeta = dy.sum(axis=1)
    dgamma = (dy * cache.xhat).sum(axis=1)
    return _dx(g, mean_g, cache.xhat, proj, cache.inv_s), dgamma, dbeta


@dataclass(frozen=True)
class Bug:
    """A planted mistake: its function, a one-line explanation, where the book explains it."""

    name: str
    backward: Callable
    explanation: str
    section: str
    harmless: bool = False
    sources: tuple[str, ...] = ()  # the threads that state this mistake; () for a planted one


BUGS: dict[str, Bug] = {b.name: b for b in (
    Bug("gamma_dropped", gamma_dropped, "gamma is missing from dx: use g = gamma * dy, not dy.",
        "Chapter 9, 'γ left out (Knet.jl)'",
        sources=("https://github.com/denizyuret/Knet.jl/issues/288", "https://github.com/denizyuret/Knet.jl/pull/289")),
    Bug("wrong_axis", wrong_axis, "the statistics' gradients reduce over the feature axis, not the batch axis.",
        "Chapter 9, 'Axis and count mistakes, hidden by square matrices'"),
    Bug("wrong_count", wrong_count, "the means in dx divide by the number of features D; divide by the batch size B.",
        "Chapter 9, 'Axis and count mistakes, hidden by square matrices'",
        sources=("https://github.com/RubixML/ML/pull/423",)),
    Bug("mean_and_variance_paths_dropped", mean_and_variance_paths_dropped,
        "dx keeps only the direct term gamma * dy / s: the paths through the mean and the variance are missing.",
        "Chapter 9, 'Only the direct path (DL4J)'",
        sources=("https://github.com/deeplearning4j/deeplearning4j/issues/8335",
                 "https://github.com/deeplearning4j/deeplearning4j/pull/8379")),
    Bug("variance_term_dropped", variance_term_dropped,
        "the path through the variance is missing: dx lacks -xhat * mean(g * xhat).",
        "Chapter 4, 'The second fan-in'"),
    Bug("mean_via_variance_dropped", mean_via_variance_dropped,
        "leaving out the variance's term into mu is harmless: it is a multiple of sum(x - mu) = 0.",
        "Chapter 4, 'The term that cancels'", harmless=True,
        sources=("https://github.com/pjreddie/darknet/issues/1634", "https://github.com/pjreddie/darknet/issues/1723",
                 "https://github.com/mlpack/mlpack/pull/2474",
                 "https://github.com/BVLC/caffe/pull/1891")),
    Bug("mean_via_variance_kept", mean_via_variance_kept,
        "keeping the variance's term into mu is harmless too: it is a multiple of sum(x - mu) = 0.",
        "Chapter 4, 'The term that cancels'", harmless=True,
        sources=("https://github.com/apache/mxnet/issues/1053", "https://github.com/apache/mxnet/pull/1061")),
    Bug("mean_via_variance_misrestored", mean_via_variance_misrestored,
        "the variance's term into mu was added per element; summed over the batch it is exactly 0.",
        "Chapter 4, 'The term that cancels'"),
    Bug("bessel_mismatch", bessel_mismatch,
        "the forward divides the variance by B - 1, but the backward uses mean(g * xhat): multiply it by B/(B-1).",
        "Chapter 6, 'Biased vs unbiased variance'"),
    Bug("eps_outside_sqrt", eps_outside_sqrt, "s must be sqrt(var + eps), not sqrt(var) + eps.",
        "Chapter 6, 'What epsilon does'"),
    Bug("missing_inv_n", missing_inv_n,
        "d mu / d x_j is 1/B, not 1: the mean's gradient must be divided by B.",
        "Chapter 2, '∂μ/∂x_j = 1/B'"),
    Bug("param_grads_wrong_axis", param_grads_wrong_axis,
        "dgamma and dbeta must sum over the batch (every axis but the channel), not over the channels.",
        "Chapter 9, 'dgamma and dbeta over the wrong axis'"),
)}


def wrong_axis_keepdims(dy, cache):
    """The wrong axis with keepdims=True: it runs on every shape, so no broadcast error gives it away."""
    g = cache.gamma * dy
    mean_g = g.mean(axis=1, keepdims=True)
    proj = (g * cache.xhat).mean(axis=1, keepdims=True)
    return (_dx(g, mean_g, cache.xhat, proj, cache.inv_s), *param_grads(dy, cache))


def variant(name: str, backward_fn: Callable) -> Bug:
    """Another way to write a registered mistake: same name, explanation and section."""
    bug = BUGS[name]
    return Bug(bug.name, backward_fn, bug.explanation, bug.section, bug.harmless, bug.sources)


# Fingerprints: every planted bug, plus other common spellings of the same mistakes.
FINGERPRINTS: tuple[Bug, ...] = (*BUGS.values(), variant("wrong_axis", wrong_axis_keepdims))

__all__ = ["BUGS", "FINGERPRINTS", "Bug", "variant", *(b.backward.__name__ for b in FINGERPRINTS)]
