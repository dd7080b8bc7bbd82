"""The explorers' shared base: one shape for all three, and the static page's precomputed, linked figures."""

from __future__ import annotations

import html

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import pytest  # noqa: E402

from bnbackprop.widgets._common import image_in  # noqa: E402
from bnbackprop.widgets.base import STATIC_ENV, Explorer, Grid, static_default  # noqa: E402
from bnbackprop.widgets.decompose import DecomposeExplorer, decompose_explorer  # noqa: E402
from bnbackprop.widgets.gradient_size import GradientSizeExplorer, gradient_size_explorer  # noqa: E402
from bnbackprop.widgets.triangle import TriangleExplorer, triangle_explorer  # noqa: E402

EXPLORERS = (TriangleExplorer, DecomposeExplorer, GradientSizeExplorer)


class SmallTriangle(TriangleExplorer):
    """The triangle explorer on a 2 x 3 grid, small enough to build in a unit test."""

    GRID = {"B": Grid("B", (3, 6)), "kind": Grid("upstream v", ("constant", "ramp", "alternating"), dropdown=True)}


def public(cls) -> set[str]:
    """The names a chapter or a test may use on an explorer."""
    return {n for n in dir(cls) if not n.startswith("_")}


def test_the_three_explorers_share_one_base_and_its_names():
    assert all(issubclass(cls, Explorer) for cls in EXPLORERS)
    assert public(TriangleExplorer) == public(DecomposeExplorer) == public(GradientSizeExplorer) == public(Explorer)


def test_live_explorers_expose_the_same_attributes():
    for e in (triangle_explorer(static=False), decompose_explorer(static=False), gradient_size_explorer(static=False)):
        assert not e.static and e.links == []
        assert e.image.value == e.figure_html(e.state) and image_in(e.image.value).startswith(b"RIFF")
        assert f'alt="{html.escape(e.describe(e.state))}"' in e.image.value
        assert set(e.controls) <= set(e.setting)
        assert all(isinstance(c.description, str) and c.description for c in e.controls.values())
        assert "application/vnd.jupyter.widget-view+json" in e._repr_mimebundle_()


class RecordingTriangle(SmallTriangle):
    """SmallTriangle that keeps each figure it draws, by the setting of the state drawn."""

    def figure_html(self, state):
        """The base class's figure, remembered under (B, kind)."""
        self.drawn = getattr(self, "drawn", {})
        self.drawn[state.B, state.kind] = super().figure_html(state)
        return self.drawn[state.B, state.kind]


def test_static_page_holds_every_grid_figure_behind_linked_stacks():
    e = RecordingTriangle(dict(B=6, kind="ramp", values="", seed=2), static=True)
    B, kind = e.controls["B"], e.controls["kind"]
    assert isinstance(B, widgets.SelectionSlider) and isinstance(kind, widgets.Dropdown)
    # every grid setting was drawn (drawing is most of this test's time, so the figures are not drawn again)
    assert sorted(e.drawn) == sorted((b, k) for b in (3, 6) for k in ("constant", "ramp", "alternating"))
    outer = e.box.children[-1]
    assert isinstance(outer, widgets.Stack) and outer.selected_index == B.index == 1
    for i, b in enumerate((3, 6)):
        inner = outer.children[i]
        assert inner.selected_index == kind.index == 1
        for j, k in enumerate(("constant", "ramp", "alternating")):
            summary, image = inner.children[j].children
            # equal <img> strings mean equal image bytes (base64 inside) and alt text
            assert image.value == e.drawn[b, k], f"B={b}, kind={k}: not the figure drawn for that setting"
            assert summary.value == e.summary(e.compute(B=b, kind=k, values="", seed=2))
    # One browser-side link per Stack: B drives the outer one, kind each inner one.
    links = [(link.source[0], link.source[1], link.target[0], link.target[1]) for link in e.links]
    assert links.count((B, "index", outer, "selected_index")) == 1
    assert sorted(id(t) for s, _, t, _ in links if s is kind) == sorted(id(c) for c in outer.children)
    assert all(isinstance(link, widgets.widget_link.DirectionalLink) for link in e.links)
    assert len(e.grid_settings()) == 6


def test_static_explorer_refuses_a_setting_off_its_grid():
    with pytest.raises(ValueError, match="B=4 is not on the static grid"):
        SmallTriangle(dict(B=4, kind="ramp", values="", seed=0), static=True)


@pytest.mark.parametrize("make, grid_names", [
    (lambda: triangle_explorer(B=5, kind="random", static=False), ("B", "kind")),
    (lambda: decompose_explorer(static=False), ("batch", "gamma", "eps")),
    (lambda: gradient_size_explorer(var=1e-2, rho=0.6, dy_mean=1.0, static=False), ("var", "rho", "eps")),
])
def test_each_chapter_setting_is_on_its_grid(make, grid_names):
    e = make()
    assert tuple(e.GRID) == grid_names
    for name, grid in e.GRID.items():
        assert e.setting[name] in grid.values, f"{name}={e.setting[name]} has no precomputed figure"
        assert len(set(grid.options())) == len(grid.values) >= 2, f"{name}: labels must tell the values apart"


def test_static_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv(STATIC_ENV, "1")
    assert static_default()
    monkeypatch.setenv(STATIC_ENV, "0")
    assert not static_default()
    monkeypatch.delenv(STATIC_ENV)
    assert not static_default()


def test_alt_text_says_what_changes():
    e = triangle_explorer(static=False)
    texts = {e.describe(e.compute(B=b, kind=k, values="", seed=0)) for b in (3, 7) for k in ("constant", "ramp")}
    assert len(texts) == 4 and all("B = " in t for t in texts)
    assert "all zero" in e.describe(e.compute(B=3, kind="constant", values="", seed=0))
