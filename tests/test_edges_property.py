"""Property test of issue 13: every call over dtypes, magnitudes, layouts and argument types either raises a
ValueError/TypeError that names what is wrong, or matches an exact reference within the per-dtype bound that
`bnbackprop.batchnorm`'s docstring states. RuntimeWarnings are errors.

The reference is computed in decimal arithmetic with 50 digits and an exponent range far beyond any dtype,
from the values exactly as the dtype holds them, so it is exact for this purpose on every platform.
"""

from __future__ import annotations

import math
import re
import warnings
from decimal import Context, Decimal, localcontext

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnbackprop.batchnorm import backward, backward_eval, backward_staged, forward, forward_eval
from bnbackprop.fast import backward_blocked, backward_fast

DTYPES = [np.float16, np.float32, np.float64, np.longdouble]
BACKWARDS = [backward, backward_staged, backward_fast, backward_blocked]
CONTEXT = Context(prec=50, Emax=10**6, Emin=-(10**6))
# A refusal must name one of these: an argument, a result, or a cached intermediate of the name table.
NAMED = re.compile(r"\b(x|gamma|beta|eps|ddof|dy|out|cache|running_mean|running_var|y|dx|dgamma|dbeta|var|s|inv_s)\b")


def unit_roundoff(dtype) -> Decimal:
    """u = eps/2 of a dtype: 2**-11, 2**-24, 2**-53, and 2**-64 for x86's 80-bit longdouble."""
    return Decimal(2) ** -(np.finfo(dtype).nmant + 1)


def compute_dtype(dtype):
    """float16 is computed in float32 (the statistics) and rounded once at the end."""
    return np.float32 if dtype == np.float16 else dtype


def exact(a) -> list[Decimal]:
    """The values of an array exactly as its dtype holds them."""
    return [Decimal(n) / Decimal(d) for n, d in (v.as_integer_ratio() for v in np.asarray(a).ravel())]


def channels(a) -> list[list[Decimal]]:
    """exact(a) grouped by channel (axis 1)."""
    a = np.asarray(a)
    moved = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
    return [exact(row) for row in moved]


def dmax(vals) -> Decimal:
    return max((abs(v) for v in vals), default=Decimal(0))


@st.composite
def batches(draw):
    """dtype, shape, x, gamma, beta, dy and eps at magnitudes from subnormal to near the dtype's largest."""
    dtype = draw(st.sampled_from(DTYPES))
    fi = np.finfo(dtype)
    lo, hi = int(np.log2(float(fi.smallest_subnormal))) + 12 if dtype != np.longdouble else -1060, min(fi.maxexp, 1000) - 4
    shape = draw(st.sampled_from([(2, 1), (3, 2), (5, 3), (4, 2, 3), (2, 3, 2), (1, 2, 4), (6, 1, 2)]))
    seed = draw(st.integers(0, 2**16))
    ex, eg, eb, ed = (draw(st.integers(lo, hi)) for _ in range(4))
    moderate = draw(st.booleans())
    if moderate:  # ordinary values: these must compute, not be refused
        ex, eg, eb, ed = (draw(st.integers(-2, 2)) for _ in range(4))
    offset = draw(st.sampled_from([0.0, 1.0, 1e3]))
    rng = np.random.default_rng(seed)
    C = shape[1]
    with np.errstate(over="ignore", under="ignore"):
        x = np.ldexp(rng.standard_normal(shape) + offset, ex).astype(dtype)
        gamma = np.ldexp(rng.uniform(0.5, 2, C) * rng.choice([-1, 1], C), eg).astype(dtype)
        beta = np.ldexp(rng.standard_normal(C), eb).astype(dtype)
        dy = np.ldexp(rng.standard_normal(shape) + rng.normal(), ed).astype(dtype)
    eps = draw(st.sampled_from([0.0, 1e-5, 0.1, "like var"]))
    if eps == "like var":  # eps on the scale of the variance, where neither term is negligible
        eps = math.ldexp(1.0, 2 * ex) if 2 * ex < np.finfo(compute_dtype(dtype)).maxexp - 1 else 1e-5
    return dtype, x, gamma, beta, dy, eps, draw(st.sampled_from([0, 1])), moderate, draw(layouts)


def as_layout(a, layout):
    """The same values as a Fortran-ordered, reversed-stride, strided, read-only array or a nested list."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "strided":
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "list" and a.dtype == np.float64:
        return a.tolist()
    return a


layouts = st.sampled_from(["c", "fortran", "reversed", "strided", "readonly", "list"])


def call(fn, *args, **kwargs):
    """('ok', result) or ('refused', message); a RuntimeWarning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            return "ok", fn(*args, **kwargs)
        except (ValueError, TypeError) as err:
            assert NAMED.search(str(err)), f"{fn.__name__} refused without naming the argument: {err}"
            return "refused", str(err)


def reference_forward(x, gamma, beta, eps, ddof):
    """Exact mu, s, xhat and y per channel, and the condition max|x| / s."""
    out = []
    with localcontext(CONTEXT):
        for xc, g, b in zip(channels(x), exact(gamma), exact(beta)):
            B = len(xc)
            mu = sum(xc) / B
            var = sum((v - mu) ** 2 for v in xc) / (B - ddof)
            s = (var + Decimal(eps)).sqrt()
            xhat = [(v - mu) / s for v in xc] if s > 0 else None
            out.append({"B": B, "s": s, "xhat": xhat, "y": None if xhat is None else [g * h + b for h in xhat],
                        "cond": 1 + dmax(xc) / s if s > 0 else None, "gamma": g, "beta": b})
    return out


def close(got, want, tol) -> bool:
    """|got - want| <= tol elementwise, in exact arithmetic."""
    with localcontext(CONTEXT):
        return all(abs(g - w) <= tol for g, w in zip(got, want))


def floor(dtype) -> Decimal:
    """Absolute slack for results in the subnormal range of the output dtype."""
    return 4 * exact(np.array([np.finfo(dtype).smallest_subnormal]))[0]


def check_forward(y, x, ref, dtype):
    """y per channel within 8 u B^2 cond (|gamma| + |beta|) plus one rounding to the output dtype."""
    assert y.dtype == dtype and y.shape == np.shape(x)
    u, uo = unit_roundoff(compute_dtype(dtype)), unit_roundoff(dtype)
    with localcontext(CONTEXT):
        for yc, r in zip(channels(y), ref):
            scale = abs(r["gamma"]) * r["cond"] + abs(r["beta"])
            tol = 8 * u * r["B"] ** 2 * scale + uo * dmax(r["y"]) + floor(dtype)
            assert close(yc, r["y"], tol), (yc[:3], r["y"][:3], tol)


def check_backward(grads, dy, ref, ddof, dtype):
    """dx within 8 u B^2 cond |gamma| max|dy| / s; dgamma within 8 u B^2 cond max|dy|; dbeta within 8 u B max|dy|."""
    dx, dgamma, dbeta = grads
    assert dx.dtype == dgamma.dtype == dbeta.dtype == dtype
    u, uo = unit_roundoff(compute_dtype(dtype)), unit_roundoff(dtype)
    with localcontext(CONTEXT):
        for c, (dxc, dyc, r) in enumerate(zip(channels(dx), channels(dy), ref)):
            B, s, xhat, g = r["B"], r["s"], r["xhat"], r["gamma"]
            sum_dy, sum_dyxhat = sum(dyc), sum(d * h for d, h in zip(dyc, xhat))
            want = [g / s * (d - sum_dy / B - h * sum_dyxhat / (B - ddof)) for d, h in zip(dyc, xhat)]
            m = dmax(dyc)
            tol = 8 * u * B**2 * r["cond"] * abs(g) * m / s + uo * dmax(want) + floor(dtype)
            assert close(dxc, want, tol), ("dx", c, dxc[:3], want[:3], tol)
            tol_g = 8 * u * B**2 * r["cond"] * m + uo * abs(sum_dyxhat) + floor(dtype)
            assert close(exact(dgamma[c : c + 1]), [sum_dyxhat], tol_g), ("dgamma", c)
            assert close(exact(dbeta[c : c + 1]), [sum_dy], 8 * u * B * m + uo * abs(sum_dy) + floor(dtype)), "dbeta"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # slow only on a busy machine
@given(case=batches())
def test_training_mode_computes_within_its_bound_or_refuses_by_name(case):
    dtype, x, gamma, beta, dy, eps, ddof, moderate, layout = case
    outcome, result = call(forward, as_layout(x, layout), as_layout(gamma, layout), beta, eps=eps, ddof=ddof)
    ref = reference_forward(x, gamma, beta, eps, ddof)
    if moderate and eps > 0:
        assert outcome == "ok", result
    if outcome == "refused":
        return
    y, cache = result
    check_forward(y, x, ref, dtype)
    for bwd in BACKWARDS:
        outcome, grads = call(bwd, as_layout(dy, layout), cache)
        if moderate and eps > 0:
            assert outcome == "ok", grads
        if outcome == "ok":
            check_backward(grads, dy, ref, ddof, dtype)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batches(), rm_exp=st.integers(-8, 8))
def test_eval_mode_computes_within_its_bound_or_refuses_by_name(case, rm_exp):
    dtype, x, gamma, beta, dy, eps, _, moderate, layout = case
    C = x.shape[1]
    rmean = np.ldexp(np.linspace(-1, 1, C), rm_exp).astype(compute_dtype(dtype))
    rvar = np.ldexp(np.linspace(0.5, 2, C), 2 * rm_exp).astype(compute_dtype(dtype))
    outcome, result = call(forward_eval, as_layout(x, layout), gamma, beta, rmean, rvar, eps=eps)
    if moderate:
        assert outcome == "ok", result
    if outcome == "refused":
        return
    y, cache = result
    assert y.dtype == dtype
    u, uo = unit_roundoff(compute_dtype(dtype)), unit_roundoff(dtype)
    with localcontext(CONTEXT):
        rows = zip(channels(x), channels(y), exact(gamma), exact(beta), exact(rmean), exact(rvar))
        inv = []
        for xc, yc, g, b, m, v in rows:
            inv_s = 1 / (v + Decimal(eps)).sqrt()
            want = [g * (xv - m) * inv_s + b for xv in xc]
            tol = 8 * u * (abs(g) * (dmax(xc) + abs(m)) * inv_s + abs(b)) + uo * dmax(want) + floor(dtype)
            assert close(yc, want, tol)
            inv.append((g, inv_s))
    outcome, grads = call(backward_eval, as_layout(dy, layout), cache)
    if outcome == "ok":
        with localcontext(CONTEXT):
            for dxc, dyc, (g, inv_s) in zip(channels(grads[0]), channels(dy), inv):
                want = [g * d * inv_s for d in dyc]
                assert close(dxc, want, 8 * u * abs(g) * dmax(dyc) * inv_s + uo * dmax(want) + floor(dtype))
