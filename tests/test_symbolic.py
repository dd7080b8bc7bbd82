"""The symbolic proof: the difference is exactly zero, a wrong formula is not, and the symbols match numbers."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import bnbackprop as bn
from bnbackprop import symbolic as S


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("B", [2, 3])
def test_compact_jacobian_equals_autodiff_exactly(B, ddof):
    assert S.difference(B, ddof).is_zero_matrix


@pytest.mark.parametrize("ddof", [0, 1])
def test_compact_vjp_equals_autodiff_exactly(ddof):
    sym, autodiff, compact = S.dx_formula(3, ddof)
    assert S.in_terms_of_s(autodiff - compact, sym, ddof).applyfunc(sp.cancel).is_zero_matrix


def test_the_biased_formula_on_a_bessel_forward_is_not_zero():
    """The proof can fail: the ddof = 0 formula against the ddof = 1 forward leaves a nonzero difference."""
    sym = S.make_symbols(3)
    diff = S.jacobian_autodiff(sym, ddof=1) - S.jacobian_compact(sym, ddof=0)
    _, var, _ = S.statistics(sym, 1)
    assert not diff.subs(sym.eps, sym.s**2 - var).applyfunc(sp.cancel).is_zero_matrix


@pytest.mark.parametrize("ddof", [0, 1])
def test_symbolic_jacobian_evaluates_to_the_numerical_one(ddof):
    sym = S.make_symbols(3)
    values = {sym.x[0]: 1.5, sym.x[1]: -0.25, sym.x[2]: 4.0, sym.eps: 0.1, sym.gamma: -1.75}
    J = np.array(S.jacobian_autodiff(sym, ddof).subs(values).evalf(), dtype=float)
    x0 = np.array([[1.5], [-0.25], [4.0]])

    def y(x):
        return bn.forward(x, np.array([-1.75]), np.array([0.3]), eps=0.1, ddof=ddof)[0]
    np.testing.assert_allclose(J, bn.numerical_jacobian(y, x0), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("B", [1, 7, 2.0, True])
def test_bad_batch_size_is_refused(B):
    with pytest.raises(ValueError, match="B must be a whole number from 2 to 6"):
        S.make_symbols(B)


def test_bad_ddof_is_refused():
    with pytest.raises(ValueError, match="ddof must be 0"):
        S.difference(3, ddof=2)
