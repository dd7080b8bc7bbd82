"""The symbolic proof: the difference is exactly zero, a wrong formula is not, and the symbols match numbers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import bnbackprop as bn


# Imported by the first test that runs, not when pytest collects this file: every test worker collects
# every file, and sympy costs each of them a third of a second and 35 MB (a fork, as the grader tests
# make hundreds of, costs more the larger the process).
@pytest.fixture(scope="module")
def S():
    """bnbackprop.symbolic."""
    return importlib.import_module("bnbackprop.symbolic")


@pytest.fixture(scope="module")
def sp():
    """sympy."""
    return importlib.import_module("sympy")


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("B", [2, 3])
def test_compact_jacobian_equals_autodiff_exactly(B, ddof, S):
    assert S.difference(B, ddof).is_zero_matrix


@pytest.mark.parametrize("ddof", [0, 1])
def test_compact_vjp_equals_autodiff_exactly(ddof, S, sp):
    sym, autodiff, compact = S.dx_formula(3, ddof)
    assert S.in_terms_of_s(autodiff - compact, sym, ddof).applyfunc(sp.cancel).is_zero_matrix


def test_the_biased_formula_on_a_bessel_forward_is_not_zero(S, sp):
    """The proof can fail: the ddof = 0 formula against the ddof = 1 forward leaves a nonzero difference."""
    sym = S.make_symbols(3)
    diff = S.jacobian_autodiff(sym, ddof=1) - S.jacobian_compact(sym, ddof=0)
    _, var, _ = S.statistics(sym, 1)
    assert not diff.subs(sym.eps, sym.s**2 - var).applyfunc(sp.cancel).is_zero_matrix


@pytest.mark.parametrize("ddof", [0, 1])
def test_symbolic_jacobian_evaluates_to_the_numerical_one(ddof, S):
    sym = S.make_symbols(3)
    values = {sym.x[0]: 1.5, sym.x[1]: -0.25, sym.x[2]: 4.0, sym.eps: 0.1, sym.gamma: -1.75}
    J = np.array(S.jacobian_autodiff(sym, ddof).subs(values).evalf(), dtype=float)
    x0 = np.array([[1.5], [-0.25], [4.0]])

    def y(x):
        return bn.forward(x, np.array([-1.75]), np.array([0.3]), eps=0.1, ddof=ddof)[0]
    np.testing.assert_allclose(J, bn.numerical_jacobian(y, x0), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("B", [1, 7, 2.0, True])
def test_bad_batch_size_is_refused(B, S):
    with pytest.raises(ValueError, match="B must be a whole number from 2 to 6"):
        S.make_symbols(B)


def test_bad_ddof_is_refused(S):
    with pytest.raises(ValueError, match="ddof must be 0"):
        S.difference(3, ddof=2)
