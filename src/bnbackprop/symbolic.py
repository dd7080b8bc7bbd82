"""A symbolic proof with SymPy: the Jacobian of batch norm equals the compact formula's, exactly.

For one channel of B values, SymPy differentiates y = gamma * (x - mu) / sqrt(var + eps) entry by
entry, and the compact formula gives the Jacobian
    dy/dx = gamma / s * (I - 1 1^T / B - xhat xhat^T / (B - ddof)).
To make the difference simplify quickly and exactly, eps is written as s^2 - var with a positive
symbol s: that is a change of variables (eps <-> s is one-to-one for s > sqrt(var)), after which
every entry is a rational function of x and s, and `cancel` decides whether it is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._extras import require
from ._validate import check_ddof

sp = require("sympy", "symbolic", __name__)


@dataclass(frozen=True)
class Symbols:
    """The symbols of one channel: the batch x_1..x_B, eps, gamma, and s = sqrt(var + eps)."""

    x: tuple[sp.Symbol, ...]
    eps: sp.Symbol
    gamma: sp.Symbol
    s: sp.Symbol


def make_symbols(B: int = 3) -> Symbols:
    """Real x_1..x_B, positive eps and s, real gamma."""
    if isinstance(B, bool) or not isinstance(B, int) or not 2 <= B <= 6:
        raise ValueError(f"B must be a whole number from 2 to 6 (the proof grows like B^4); got {B!r}")
    return Symbols(sp.symbols(f"x1:{B + 1}", real=True), sp.Symbol("epsilon", positive=True),
                   sp.Symbol("gamma", real=True), sp.Symbol("s", positive=True))


def statistics(sym: Symbols, ddof: int = 0):
    """mu, var (divided by B - ddof), and the centred values xmu, as SymPy expressions."""
    ddof = check_ddof(ddof)
    B = len(sym.x)
    mu = sp.Add(*sym.x) / B
    xmu = [xi - mu for xi in sym.x]
    var = sp.Add(*[d**2 for d in xmu]) / (B - ddof)
    return mu, var, xmu


def symbolic_forward(sym: Symbols, ddof: int = 0) -> sp.Matrix:
    """y = gamma * xhat (beta drops out of dy/dx), straight from the definition."""
    _, var, xmu = statistics(sym, ddof)
    return sp.Matrix([sym.gamma * d / sp.sqrt(var + sym.eps) for d in xmu])


def jacobian_autodiff(sym: Symbols, ddof: int = 0) -> sp.Matrix:
    """dy_i / dx_j by SymPy's differentiation of the forward."""
    return symbolic_forward(sym, ddof).jacobian(sp.Matrix(sym.x))


def jacobian_compact(sym: Symbols, ddof: int = 0) -> sp.Matrix:
    """The compact formula as a matrix: gamma / s * (I - 1 1^T / B - xhat xhat^T / (B - ddof))."""
    _, var, xmu = statistics(sym, ddof)
    B = len(sym.x)
    s = sp.sqrt(var + sym.eps)
    xhat = sp.Matrix([d / s for d in xmu])
    ones = sp.ones(B, B)
    return sym.gamma / s * (sp.eye(B) - ones / B - xhat * xhat.T / (B - ddof))


def in_terms_of_s(expr, sym: Symbols, ddof: int = 0):
    """Substitute eps = s^2 - var, so that sqrt(var + eps) = s and every entry becomes rational."""
    _, var, _ = statistics(sym, ddof)
    return expr.subs(sym.eps, sym.s**2 - var)


def difference(B: int = 3, ddof: int = 0) -> sp.Matrix:
    """The autodiff Jacobian minus the compact one, simplified exactly: the zero matrix if the formula holds."""
    sym = make_symbols(B)
    diff = jacobian_autodiff(sym, ddof) - jacobian_compact(sym, ddof)
    return in_terms_of_s(diff, sym, ddof).applyfunc(sp.cancel)


def dx_formula(B: int = 3, ddof: int = 0):
    """The vector-Jacobian product dx = J^T dy for symbolic dy, and the compact formula applied to dy."""
    sym = make_symbols(B)
    dy = sp.Matrix(sp.symbols(f"dy1:{B + 1}", real=True))
    _, var, xmu = statistics(sym, ddof)
    s = sp.sqrt(var + sym.eps)
    g = sym.gamma * dy
    xhat = sp.Matrix([d / s for d in xmu])
    proj = (g.T * xhat)[0] / (B - ddof)
    compact = (g - sp.ones(B, 1) * sp.Add(*g) / B - xhat * proj) / s
    return sym, jacobian_autodiff(sym, ddof).T * dy, compact


__all__ = [
    "Symbols",
    "difference",
    "dx_formula",
    "in_terms_of_s",
    "jacobian_autodiff",
    "jacobian_compact",
    "make_symbols",
    "statistics",
    "symbolic_forward",
]
