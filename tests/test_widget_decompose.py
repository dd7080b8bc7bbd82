"""Chapter 4's widget: the three parts of dx, their sum, and the controls that drive them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnbackprop.batchnorm import backward, forward  # noqa: E402
from bnbackprop.reference import autograd_backward  # noqa: E402
from bnbackprop.widgets.decompose import decompose, decompose_explorer, decompose_figure, parse_values  # noqa: E402


def random_batch(seed, B=7):
    """A batch with a non-zero mean and a random upstream gradient."""
    rng = np.random.default_rng(seed)
    return 3.0 * rng.standard_normal(B) + 5.0, rng.standard_normal(B), float(rng.uniform(0.5, 2.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.3])
def test_parts_sum_to_backward_and_autograd(seed, eps):
    x, dy, gamma = random_batch(seed)
    d = decompose(x, dy, gamma, eps)
    np.testing.assert_allclose(d.total, d.dx, rtol=1e-12, atol=1e-14)
    dx_ref = autograd_backward(dy[:, None], x[:, None], [gamma], [0.7], eps)[0][:, 0]
    np.testing.assert_allclose(d.dx, dx_ref, rtol=1e-10, atol=1e-13)


def test_each_part_has_its_formula():
    x, dy, gamma = random_batch(3)
    d = decompose(x, dy, gamma, 1e-5)
    s = np.sqrt(x.var() + 1e-5)
    xhat = (x - x.mean()) / s
    g = gamma * dy
    np.testing.assert_allclose(d.parts[0], g / s, rtol=1e-13)
    np.testing.assert_allclose(d.parts[1], -np.mean(g) / s * np.ones_like(x), rtol=1e-13)
    np.testing.assert_allclose(d.parts[2], -xhat * np.mean(g * xhat) / s, rtol=1e-12)
    # The middle part is constant; the last part is proportional to xhat.
    assert np.ptp(d.parts[1]) == 0.0
    np.testing.assert_allclose(d.parts[2] / d.xhat, (d.parts[2] / d.xhat)[0], rtol=1e-12)


def test_text_is_parsed_like_arrays():
    d_text = decompose("1, 4, 2.5, -3", "0.5, -1, 2, 0.25", 0.8, 1e-3)
    d_arr = decompose([1, 4, 2.5, -3], [0.5, -1, 2, 0.25], 0.8, 1e-3)
    np.testing.assert_array_equal(d_text.dx, d_arr.dx)
    np.testing.assert_array_equal(parse_values(" 1,2 , -3.5e1 ", "x"), [1.0, 2.0, -35.0])


@pytest.mark.parametrize(
    "x, dy, match",
    [
        ("1, two, 3", "1, 2, 3", r"could not read 'two' \(item 2\)"),
        ("1, , 3", "1, 2, 3", r"could not read an empty item \(item 2\)"),
        ("1, 2, 3", "1, 2", r"x has 3 values but dy has 2"),
        ("1, nan, 3", "1, 2, 3", r"x must be finite"),
        ("5", "1", r"more than 1 value per channel"),
        ([[1.0, 2.0]], [1.0, 2.0], r"expected a 1-D list"),
        (12, "1", r"x has shape \(\); expected a 1-D list"),
    ],
)
def test_bad_input_names_the_problem(x, dy, match):
    with pytest.raises(ValueError, match=match):
        decompose(x, dy)


def test_bad_gamma_and_eps():
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        decompose(gamma=float("inf"))
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        decompose(eps=-1.0)
    with pytest.raises(ValueError, match="needs the Decomposition"):
        decompose_figure("not a decomposition")


def test_figure_draws_three_bar_groups_and_the_dx_ticks():
    d = decompose()
    fig = decompose_figure(d)
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * d.x.size
    heights = np.array([p.get_height() for p in ax.patches]).reshape(3, d.x.size)
    np.testing.assert_allclose(heights, np.stack(d.parts))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), d.dx)
    assert "sum of parts =" in ax.get_title()
    plt.close(fig)


def test_moving_each_control_recomputes():
    w = decompose_explorer(static=False)
    first_png, first = w.image.value, w.state
    w.controls["gamma"].value = -2.0
    np.testing.assert_allclose(w.state.dx, -2.0 / 1.5 * first.dx, rtol=1e-12)
    assert w.image.value != first_png
    w.controls["eps"].value = 1.0
    x, dy = first.x, first.dy
    np.testing.assert_allclose(w.state.dx, backward(dy[:, None], forward(x[:, None], [-2.0], [0.0], 1.0)[1])[0][:, 0])
    w.controls["x"].value = "1, 2, 4, 8, 16, 32"
    np.testing.assert_array_equal(w.state.x, [1, 2, 4, 8, 16, 32])
    w.controls["dy"].value = "1, 1, 1, 1, 1, 1"
    # A constant upstream gradient is removed entirely by the centering: dx = 0.
    np.testing.assert_allclose(w.state.dx, 0.0, atol=1e-15)
    assert "Cannot" not in w.message.value


def test_bad_text_shows_a_message_and_keeps_the_last_figure():
    w = decompose_explorer(static=False)
    png, result = w.image.value, w.state
    w.controls["x"].value = "1, two, <3>, 4, 5, 6"
    assert "could not read &#x27;two&#x27; (item 2)" in w.message.value
    assert w.image.value == png and w.state is result
    w.controls["x"].value = "1, <3>, 3, 4, 5, 6"
    assert "&lt;3&gt;" in w.message.value and "<3>" not in w.message.value  # escaped: text, not a tag
    w.controls["x"].value = "1, 2, 3, 4, 5, 6"
    assert "Cannot" not in w.message.value
    assert w.image.value != png


def test_parse_values_refuses_what_is_not_text():
    with pytest.raises(ValueError, match="string of comma-separated numbers"):
        parse_values(12, "x")


def test_values_given_as_lists_appear_in_the_text_fields():
    w = decompose_explorer(x=[1.0, 2.0, 4.0], dy=[0.5, -0.5, 1.0], batch=None, static=False)
    assert w.controls["x"].value == "1, 2, 4"
    assert w.controls["dy"].value == "0.5, -0.5, 1"
