"""The gradient-size widget: its pure function, its figure, and its controls."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnbackprop.reference import autograd_backward  # noqa: E402
from bnbackprop.widgets._common import image_in  # noqa: E402
from bnbackprop.widgets.gradient_size import (  # noqa: E402
    draw_gradient_size,
    gradient_size,
    gradient_size_explorer,
    predicted_rms,
)


@pytest.mark.parametrize("var", [1e-8, 1e-3, 0.5, 2.0, 1e4])
@pytest.mark.parametrize("rho", [-0.7, 0.0, 0.3, 1.0])
@pytest.mark.parametrize("eps", [0.0, 1e-5, 1e-2])
def test_closed_form_matches_backward(var, rho, eps):
    r = gradient_size(var=var, dy_spread=1.7, rho=rho, dy_mean=0.8, eps=eps, gamma=-1.3)
    # Rounding in dx is relative to its scale |gamma| * dy_spread / s, not to rms(dx), which may be 0.
    scale = 1.3 * 1.7 / np.sqrt(var + eps)
    np.testing.assert_allclose(r.rms_dx, r.predicted, rtol=1e-6, atol=1e-11 * scale)


def test_dx_is_the_autograd_gradient():
    r = gradient_size(var=0.3, dy_spread=1.2, rho=0.4, dy_mean=-0.5, eps=1e-3, gamma=0.7)
    dx = autograd_backward(r.dy[:, None], r.x[:, None], np.array([0.7]), np.zeros(1), eps=1e-3)[0]
    np.testing.assert_allclose(r.dx, dx.ravel(), rtol=1e-9, atol=1e-12)


def test_the_mean_of_dy_does_not_matter_and_aligned_dy_vanishes():
    a = gradient_size(var=0.5, dy_mean=0.0)
    b = gradient_size(var=0.5, dy_mean=2.5)
    np.testing.assert_allclose(a.dx, b.dx, atol=1e-12)
    assert gradient_size(var=0.5, rho=1.0, eps=0.0).rms_dx < 1e-12


def test_gradient_scales_as_one_over_std_and_is_capped_by_eps():
    big, bigger = gradient_size(var=1e2, eps=0.0), gradient_size(var=1e4, eps=0.0)
    np.testing.assert_allclose(big.rms_dx / bigger.rms_dx, 10.0, rtol=1e-12)
    assert gradient_size(var=1e-12, eps=1e-4).rms_dx <= 1 / np.sqrt(1e-4)
    np.testing.assert_allclose(predicted_rms(0.0, 2.0, 0.0, 1e-4), 2.0 / np.sqrt(1e-4))


def test_figure_has_two_panels_with_the_curve():
    fig = draw_gradient_size(var=0.01, rho=0.5)
    left, right = fig.axes
    assert left.get_xscale() == "log" and len(left.lines) >= 4
    assert "rms(dx)" in right.get_title()


def test_sliders_drive_the_result_and_the_image():
    explorer = gradient_size_explorer(static=False)
    before, png = explorer.state.rms_dx, explorer.image.value
    explorer.controls["var"].value = 100.0
    assert explorer.state.rms_dx == pytest.approx(before / np.sqrt((100.0 + 1e-5) / (1.0 + 1e-5)), rel=1e-9)
    assert explorer.image.value != png and image_in(explorer.image.value)[:4] == b"RIFF"
    explorer.controls["rho"].value = 1.0
    explorer.controls["eps"].value = 1e-8
    assert explorer.state.rms_dx < 1e-6 * before
    assert f"{explorer.state.rms_dx:.4g}" in explorer.message.value


@pytest.mark.parametrize("kwargs,match", [
    (dict(var=-1.0), "var >= 0"), (dict(var=0.0, eps=0.0), "var \\+ eps > 0"),
    (dict(dy_spread=-0.1), "dy_spread"), (dict(rho=1.5), "rho"), (dict(B=2), "B must be"),
])
def test_bad_settings_get_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_size(**kwargs)
