"""The triangle explorer: the two paths from x to xmu, what each sends back, and their sum.

`triangle_state` computes (pure, tested), `triangle_figure` draws, `triangle_explorer` puts
ipywidgets controls on top: the figure is re-rendered into an `ipywidgets.Image` on every change.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .. import engine
from ..draw import draw_jacobian
from ._common import figure_png
from ._common import parse_values as parse_numbers

KINDS = ("constant", "random", "one-hot", "hand-set")
B_MIN, B_MAX = 2, 8
DIRECT, VIA_MU, TOTAL = "tab:blue", "tab:orange", "tab:green"


@dataclass(frozen=True)
class TriangleState:
    """What the triangle x -> mu -> xmu, x -> xmu does to an upstream gradient g arriving at xmu."""

    B: int
    kind: str
    g: np.ndarray  # upstream gradient dL/dxmu
    direct: np.ndarray  # contribution of the edge x -> xmu: g
    via_mu: np.ndarray  # contribution of the path x -> mu -> xmu: -mean(g)
    total: np.ndarray  # the fan-in sum at x: g - mean(g)
    J: np.ndarray  # d xmu / d x = I - 11^T/B, the sum of the two path Jacobians


def parse_values(text: str, B: int) -> np.ndarray:
    """B comma-separated numbers from `text`, as a float vector."""
    values = parse_numbers(text, "hand-set values")
    if values.size != B:
        raise ValueError(f"hand-set values: got {values.size} number(s) for B = {B}; "
                         f"type exactly {B} comma-separated numbers")
    return values


def check_choice(B, kind) -> None:
    """B is an integer in [B_MIN, B_MAX] and kind is one of KINDS."""
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or not B_MIN <= B <= B_MAX:
        raise ValueError(f"B must be an integer from {B_MIN} to {B_MAX}; got {B!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")


def upstream(B: int, kind: str, values: str = "", seed: int = 0) -> np.ndarray:
    """The upstream gradient g of one kind: constant ones, seeded normal, one-hot at 0, or hand-set."""
    check_choice(B, kind)
    if kind == "constant":
        return np.ones(B)
    if kind == "random":
        return np.random.default_rng(seed).standard_normal(B)
    if kind == "one-hot":
        return np.eye(B)[0]
    return parse_values(values, B)


def triangle_graph(B: int, seed: int = 0):
    """The triangle alone, built with the engine: (x, mu, xmu) for B seeded input values."""
    x = engine.leaf(np.random.default_rng(seed + 1).normal(3.0, 2.0, size=B), "x")
    mu = x.mean(keepdims=True).named("mu")
    return x, mu, (x - mu).named("xmu")


def triangle_state(B: int = 4, kind: str = "random", values: str = "", seed: int = 0) -> TriangleState:
    """Run the engine's backward pass through the triangle with upstream g; split dx by path."""
    g = upstream(B, kind, values, seed)
    x, mu, xmu = triangle_graph(B, seed)
    grads = engine.backprop(xmu, seed=g)
    by_edge = {edge.dst.name: c for edge, c in grads.contributions(x)}
    J = sum(engine.path_jacobian(p) for p in engine.paths(x, xmu))
    return TriangleState(int(B), kind, g, by_edge["xmu"], np.broadcast_to(by_edge["mu"], (B,)).copy(),
                         grads[x], J)


def triangle_figure(state: TriangleState):
    """Bars of each path's contribution and their sum, next to the heatmap of d xmu / d x."""
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(9.5, 3.6), width_ratios=(1.35, 1))
    i, w = np.arange(state.B), 0.27
    bars.bar(i - w, state.direct, w, color=DIRECT, label=r"direct path $x\to\bar{x}$: $g$")
    bars.bar(i, state.via_mu, w, color=VIA_MU, label=r"path through $\mu$: $-\mathrm{mean}(g)$")
    bars.bar(i + w, state.total, w, color=TOTAL, label=r"sum: $g-\mathrm{mean}(g)$")
    bars.axhline(0, color="0.3", lw=0.8)
    bars.set_xticks(i)
    bars.set_xlabel("index j of x")
    bars.set_ylabel(r"contribution to $\partial L/\partial x_j$")
    bars.set_title(f"B = {state.B}, upstream g: {state.kind}")
    bars.legend(fontsize=8, loc="best")
    draw_jacobian(state.J, ax=heat, title=r"$\partial\bar{x}_i/\partial x_j = I - \mathbf{1}\mathbf{1}^\top/B$")
    fig.tight_layout()
    return fig


def triangle_png(state: TriangleState) -> bytes:
    """The figure for `state` as PNG bytes."""
    return figure_png(triangle_figure(state))


def summary_html(state: TriangleState) -> str:
    """One line of numbers under the controls."""
    fmt = ", ".join
    total = state.total.sum()
    # sum(g - mean(g)) is 0 up to rounding: say so rather than show the CPU's rounding noise.
    shown = "0 to rounding" if abs(total) <= 1e-12 * np.abs(state.g).sum() else f"{total:.1e}"
    return (f"g = [{fmt(f'{v:.2f}' for v in state.g)}] &nbsp; mean(g) = {state.g.mean():.3f} &nbsp; "
            f"g - mean(g) = [{fmt(f'{v:.2f}' for v in state.total)}] &nbsp; sum = {shown}")


class TriangleExplorer(widgets.VBox):
    """Controls (B, upstream g, hand-set values), a message line and the figure as a PNG image."""

    def __init__(self, B: int = 4, kind: str = "random", values: str = "1, 0, -2, 0.5", seed: int = 0):
        self.seed = seed
        self.slider = widgets.IntSlider(value=B, min=B_MIN, max=B_MAX, description="B")
        self.kind = widgets.Dropdown(options=KINDS, value=kind, description="upstream g")
        self.values = widgets.Text(value=values, description="values", placeholder="e.g. 1, 0, -2, 0.5")
        self.message = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.state = None
        for control in (self.slider, self.kind, self.values):
            control.observe(self.refresh, names="value")
        super().__init__([widgets.HBox([self.slider, self.kind, self.values]), self.message, self.image])
        self.refresh()

    def refresh(self, _change=None) -> None:
        """Recompute and redraw; bad hand-set text shows a message and keeps the last figure."""
        try:
            state = triangle_state(self.slider.value, self.kind.value, self.values.value, self.seed)
        except ValueError as err:
            self.message.value = f'<span style="color:#b00020"><b>Cannot use these values:</b> {html.escape(str(err))}</span>'
            return
        self.state = state
        self.message.value = summary_html(state)
        self.image.value = triangle_png(state)


def triangle_explorer(B: int = 4, kind: str = "random", values: str = "1, 0, -2, 0.5", seed: int = 0):
    """The interactive triangle explorer for a notebook cell."""
    check_choice(B, kind)
    return TriangleExplorer(B, kind, values, seed)


__all__ = [
    "KINDS",
    "TriangleExplorer",
    "TriangleState",
    "check_choice",
    "parse_values",
    "summary_html",
    "triangle_explorer",
    "triangle_figure",
    "triangle_graph",
    "triangle_png",
    "triangle_state",
    "upstream",
]
