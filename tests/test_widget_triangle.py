"""The triangle explorer: the pure computation, the figure, and controls that drive both."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnbackprop.widgets._common import image_in  # noqa: E402
from bnbackprop.widgets.triangle import (  # noqa: E402
    KINDS,
    parse_values,
    triangle_explorer,
    triangle_figure,
    triangle_state,
    upstream,
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("B", [2, 5, 10])
def test_paths_add_up_to_v_minus_mean(B, kind):
    values = ", ".join(f"{v:g}" for v in np.linspace(-1.5, 2.0, B) ** 2)
    s = triangle_state(B, kind, values, seed=3)
    np.testing.assert_allclose(s.direct, s.v)
    np.testing.assert_allclose(s.via_mu, np.full(B, -s.v.mean()))
    np.testing.assert_allclose(s.direct + s.via_mu, s.total)
    np.testing.assert_allclose(s.total, s.v - s.v.mean(), atol=1e-15)
    np.testing.assert_allclose(s.J.T @ s.v, s.total, atol=1e-15)
    np.testing.assert_allclose(s.J, np.eye(B) - np.ones((B, B)) / B, atol=1e-15)


def test_kinds_give_the_upstream_they_name():
    np.testing.assert_array_equal(upstream(4, "constant"), np.ones(4))
    np.testing.assert_array_equal(upstream(4, "one-hot"), [1, 0, 0, 0])
    np.testing.assert_array_equal(upstream(3, "hand-set", "1, -2.5, 4e-1"), [1, -2.5, 0.4])
    np.testing.assert_array_equal(upstream(4, "ramp"), [1, 2, 3, 4])
    np.testing.assert_array_equal(upstream(5, "alternating"), [1, -1, 1, -1, 1])
    a, b, c = upstream(6, "random", seed=1), upstream(6, "random", seed=1), upstream(6, "random", seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and np.std(a) > 0


def test_only_a_constant_upstream_vanishes():
    assert np.allclose(triangle_state(5, "constant").total, 0)
    assert not np.allclose(triangle_state(5, "one-hot").total, 0)
    np.testing.assert_allclose(triangle_state(5, "one-hot").total, [0.8, -0.2, -0.2, -0.2, -0.2])


@pytest.mark.parametrize("text, problem", [("1, 2, x, 4", "could not read 'x' (item 3) as a number"),
                                           ("1, 2, 3", "got 3 number(s) for B = 4"),
                                           ("", "could not read an empty item (item 1)"), ("1, 2, 3, 4, 5", "got 5 number(s) for B = 4"), ("1, nan, 2, 3", "finite")])
def test_bad_hand_set_text_raises_a_clear_valueerror(text, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_values(text, 4)


@pytest.mark.parametrize("B, kind", [(1, "random"), (11, "random"), (4.0, "random"), (True, "random"),
                                     (4, "ones"), (4, None)])
def test_bad_b_or_kind_raises(B, kind):
    with pytest.raises(ValueError, match="B must be|kind must be"):
        triangle_state(B, kind)
    with pytest.raises(ValueError, match="B must be|kind must be"):
        triangle_explorer(B, kind)


def test_figure_has_bars_per_path_and_the_heatmap():
    s = triangle_state(6, "random", seed=4)
    fig = triangle_figure(s)
    bars, heat = fig.axes[:2]
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, np.concatenate([s.direct, s.via_mu, s.total]))
    np.testing.assert_allclose(heat.images[0].get_array(), s.J)
    plt.close(fig)


def test_the_upstream_gradient_is_called_v_as_in_the_name_table():
    """dL/dxbar is v (names.py); g = gamma * dy is the gradient at xhat and must not name it here."""
    import re

    from bnbackprop.names import SYMBOLS
    from bnbackprop.widgets.triangle import TriangleExplorer, describe, summary_html

    assert SYMBOLS["v"] == "v"
    s = triangle_state(5, "ramp")
    fig = triangle_figure(s)
    bars = fig.axes[0]
    shown = [t.get_text() for t in bars.get_legend().get_texts()] + [bars.get_title()]
    shown += [summary_html(s), describe(s), TriangleExplorer.GRID["kind"].label, TriangleExplorer.NOTE]
    shown += [c.description for c in triangle_explorer(static=False).controls.values()]
    plt.close(fig)
    text = " ".join(shown)
    assert re.search(r"\bv\b", text) and not re.search(r"\bg\b", text), text


def test_moving_the_slider_recomputes_and_redraws():
    w = triangle_explorer(B=4, kind="random", static=False)
    before = image_in(w.image.value)
    assert before.startswith(b"RIFF") and w.state.B == 4
    w.controls["B"].value = 7
    assert w.state.B == 7 and w.state.J.shape == (7, 7)
    np.testing.assert_allclose(w.state.total, triangle_state(7, "random").total)
    after = image_in(w.image.value)
    assert after.startswith(b"RIFF") and after != before


def test_dropdown_and_text_drive_the_state_and_bad_text_shows_a_message():
    w = triangle_explorer(B=4, kind="constant", static=False)
    assert np.allclose(w.state.total, 0)
    w.controls["kind"].value = "hand-set"
    w.controls["values"].value = "3, -1, 0, 2"
    np.testing.assert_allclose(w.state.total, [2, -2, -1, 1])
    shown = w.image.value
    w.controls["values"].value = "3, -1, oops"
    assert "Cannot use these values" in w.message.value and "could not read &#x27;oops&#x27; (item 3) as a number" in w.message.value
    assert w.image.value == shown and w.state.B == 4
    w.controls["values"].value = "1, 1, 1, 5"
    assert "Cannot" not in w.message.value
    np.testing.assert_allclose(w.state.total, [-1, -1, -1, 3])


def test_chapter_3_shows_the_default_figure_then_the_live_widget():
    """The HTML/PDF get a real picture; the interactive cell is the one a browser test drives."""
    import nbformat
    from pathlib import Path

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "book" / "03_triangle.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    live = [i for i, c in enumerate(code) if "triangle_explorer(" in c.source and "import" not in c.source]
    assert len(live) == 1
    cell = code[live[0]]
    assert "nbval-ignore-output" in cell.metadata.get("tags", [])
    assert any(o.get("data", {}).get("application/vnd.jupyter.widget-view+json") for o in cell.outputs)
    default = code[live[0] - 1]
    assert "triangle_figure(" in default.source and default.metadata["mystnb"]["figure"]["name"]
    assert any("image/png" in o.get("data", {}) for o in default.outputs)
