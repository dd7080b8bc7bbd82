"""The check battery: correct backwards pass everything, each planted bug is caught and hidden where it should be."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import bnbackprop as bn
from bnbackprop.grader import battery as ck
from bnbackprop.grader.bugs import BUGS

HOSTILE = [c.name for c in ck.CHECKS if not c.friendly]
REAL_BUGS = [name for name, bug in BUGS.items() if not bug.harmless]


def engine_style(dy, cache):
    """The engine's backward behind the (dy, cache) signature: a third independent implementation."""
    x, gamma = cache.x, cache.gamma.ravel()
    return bn.engine_backward(dy, x, gamma, np.zeros_like(gamma), cache.eps, cache.ddof)


@pytest.mark.parametrize("backward", [bn.backward, bn.backward_staged, engine_style], ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_correct_backwards_pass_every_check(backward, seed):
    outcomes = ck.run_battery(backward, seed=seed)
    assert [o.reason for o in outcomes.values() if o.caught] == []
    assert max(o.error for o in outcomes.values()) < 1e-12


@pytest.mark.parametrize("name", REAL_BUGS)
def test_the_hostile_checks_catch_every_real_bug(name):
    outcomes = ck.run_battery(BUGS[name].backward, HOSTILE)
    assert outcomes["hostile"].caught, outcomes["hostile"].reason


def test_the_harmless_bug_passes_everything():
    table = ck.caught_table({"dropped": BUGS["mean_via_variance_dropped"].backward})
    assert ck.missed_by(table, "dropped") == [c.name for c in ck.CHECKS]


@pytest.mark.parametrize(("bug", "check"), [
    ("gamma_dropped", "gamma_one"),
    ("bessel_mismatch", "biased_only"),
    ("eps_outside_sqrt", "eps_zero"),
    ("param_grads_wrong_axis", "dx_only"),
    ("wrong_axis", "square_smoke"),
    ("variance_term_dropped", "sum_dx_zero"),
    ("mean_via_variance_misrestored", "sum_of_y"),
])
def test_each_friendly_choice_hides_the_bug_it_should(bug, check):
    """Changing the one friendly choice back to the hostile one makes the bug visible."""
    assert not ck.run_check(BUGS[bug].backward, check).caught
    assert ck.run_check(BUGS[bug].backward, "hostile").caught


def test_wrong_axis_crashes_on_non_square_and_runs_on_square():
    assert "raised ValueError" in ck.run_check(BUGS["wrong_axis"].backward, "hostile").reason
    square = replace(ck.HOSTILE, name="square_values", shape=(4, 4))
    outcome = ck.run_check(BUGS["wrong_axis"].backward, square)
    assert outcome.caught and "raised" not in outcome.reason


def test_term_error_is_zero_based_where_the_true_gradient_is_zero():
    """At B = 2, eps = 0 the true dx is 0: rounding noise must not count, a real term must."""
    x, gamma, beta, dy = ck.make_case(ck.CHECKS_BY_NAME["hostile_b2"], seed=3)
    _, cache = bn.forward(x, gamma, beta, eps=0.0)
    scales = ck.term_scales(dy, cache)
    assert ck.term_error(bn.backward(dy, cache)[0], 0.0, scales[0]) < 1e-13
    assert ck.term_error(BUGS["variance_term_dropped"].backward(dy, cache)[0], 0.0, scales[0]) > 1e-2


def test_make_case_follows_the_check():
    x, gamma, beta, dy = ck.make_case(replace(ck.HOSTILE, zero_mean=True, gamma_one=True, dy_ones=True))
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-14)
    assert np.all(gamma == 1) and np.all(beta == 0) and np.all(dy == 1)
    x, gamma, _, _ = ck.make_case(ck.HOSTILE)
    assert x.shape == (7, 3) and np.all(np.abs(x.mean(axis=0) - 12) < 1) and np.any(gamma < 0)


def test_catch_rate_counts_seeds():
    near_one = replace(ck.HOSTILE, name="near_one", gamma_spread=0.02, tol=1e-2)
    rate = ck.catch_rate(BUGS["gamma_dropped"].backward, near_one, range(20))
    assert 0 < rate < 1
    assert ck.catch_rate(bn.backward, near_one, range(5)) == 0


def test_caught_markdown_marks_friendly_columns():
    table = ck.caught_table({"ok": bn.backward, "bad": BUGS["missing_inv_n"].backward}, ["gamma_one", "hostile"])
    text = ck.caught_markdown(table)
    assert "`gamma_one`*" in text and "| `hostile` |" in text
    assert text.splitlines()[-1] == "| `bad` | caught | caught |"


def test_backwards_that_return_garbage_are_caught_with_a_reason():
    nan = ck.run_check(lambda dy, cache: (dy * np.nan, np.zeros(3), np.zeros(3)), "hostile")
    assert nan.caught and "NaN" in nan.reason
    pair = ck.run_check(lambda dy, cache: (dy, dy), "hostile")
    assert pair.caught and "tuple" in pair.reason


@pytest.mark.parametrize(("call", "match"), [
    (lambda: ck.run_check("not a function", "hostile"), "backward must be a function"),
    (lambda: ck.run_check(bn.backward, "no_such_check"), "check must be a Check or one of"),
    (lambda: ck.run_check(bn.backward, replace(ck.HOSTILE, compare="values")), "compare must be one of"),
    (lambda: ck.run_battery(bn.backward, []), "at least one check"),
    (lambda: ck.caught_table({}), "non-empty dict"),
    (lambda: ck.missed_by({"a": {}}, "b"), "not a row"),
    (lambda: ck.catch_rate(bn.backward, "hostile", []), "at least one seed"),
    (lambda: ck.caught_markdown({}), "at least one row"),
])
def test_bad_input_gets_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
