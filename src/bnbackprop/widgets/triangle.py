"""The triangle explorer: the two paths from x to xmu, what each sends back, and their sum.

The upstream gradient arriving at xmu is `v` = dL/dxbar (the name table's letter; `g` is gamma * dy = dL/dxhat).

`triangle_state` computes (pure, tested), `triangle_figure` draws, `triangle_explorer` puts
ipywidgets controls on top (`bnbackprop.widgets.base`: live in a kernel, precomputed on a static page).
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .. import engine
from ..draw import draw_jacobian
from ._common import parse_values as parse_numbers
from .base import STYLE, Explorer, Grid

PRESET_KINDS = ("constant", "random", "one-hot", "ramp", "alternating")
KINDS = (*PRESET_KINDS, "hand-set")
B_MIN, B_MAX = 2, 10
DIRECT, VIA_MU, TOTAL = "tab:blue", "tab:orange", "tab:green"


@dataclass(frozen=True)
class TriangleState:
    """What the triangle x -> mu -> xmu, x -> xmu does to an upstream gradient v arriving at xmu."""

    B: int
    kind: str
    v: np.ndarray  # upstream gradient dL/dxmu
    direct: np.ndarray  # contribution of the edge x -> xmu: v
    via_mu: np.ndarray  # contribution of the path x -> mu -> xmu: -mean(v)
    total: np.ndarray  # the fan-in sum at x: v - mean(v)
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
    """The upstream gradient v of one kind: constant ones, seeded normal, one-hot at 0, the ramp 1..B,
    alternating +1/-1, or hand-set from `values`."""
    check_choice(B, kind)
    if kind == "constant":
        return np.ones(B)
    if kind == "random":
        return np.random.default_rng(seed).standard_normal(B)
    if kind == "one-hot":
        return np.eye(B)[0]
    if kind == "ramp":
        return np.arange(1.0, B + 1)
    if kind == "alternating":
        return (-1.0) ** np.arange(B)
    return parse_values(values, B)


def triangle_graph(B: int, seed: int = 0):
    """The triangle alone, built with the engine: (x, mu, xmu) for B seeded input values."""
    x = engine.leaf(np.random.default_rng(seed + 1).normal(3.0, 2.0, size=B), "x")
    mu = x.mean(keepdims=True).named("mu")
    return x, mu, (x - mu).named("xmu")


def triangle_state(B: int = 4, kind: str = "random", values: str = "", seed: int = 0) -> TriangleState:
    """Run the engine's backward pass through the triangle with upstream v; split dx by path."""
    v = upstream(B, kind, values, seed)
    x, mu, xmu = triangle_graph(B, seed)
    grads = engine.backprop(xmu, seed=v)
    by_edge = {edge.dst.name: c for edge, c in grads.contributions(x)}
    J = sum(engine.path_jacobian(p) for p in engine.paths(x, xmu))
    return TriangleState(int(B), kind, v, by_edge["xmu"], np.broadcast_to(by_edge["mu"], (B,)).copy(),
                         grads[x], J)


def triangle_figure(state: TriangleState):
    """Bars of each path's contribution and their sum, next to the heatmap of d xmu / d x."""
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(9.5, 3.6), width_ratios=(1.35, 1))
    i, w = np.arange(state.B), 0.27
    bars.bar(i - w, state.direct, w, color=DIRECT, label=r"direct path $x\to\bar{x}$: $v$")
    bars.bar(i, state.via_mu, w, color=VIA_MU, label=r"path through $\mu$: $-\mathrm{mean}(v)$")
    bars.bar(i + w, state.total, w, color=TOTAL, label=r"sum: $v-\mathrm{mean}(v)$")
    bars.axhline(0, color="0.3", lw=0.8)
    bars.set_xticks(i)
    bars.set_xlabel("index j of x")
    bars.set_ylabel(r"contribution to $\partial L/\partial x_j$")
    bars.set_title(f"B = {state.B}, upstream v: {state.kind}")
    bars.legend(fontsize=8, loc="best")
    draw_jacobian(state.J, ax=heat, title=r"$\partial\bar{x}_i/\partial x_j = I - \mathbf{1}\mathbf{1}^\top/B$")
    fig.tight_layout()
    return fig


def summary_html(state: TriangleState) -> str:
    """One line of numbers under the controls."""
    fmt = ", ".join
    total = state.total.sum()
    # sum(v - mean(v)) is 0 up to rounding: say so rather than show the CPU's rounding noise.
    shown = "0 to rounding" if abs(total) <= 1e-12 * np.abs(state.v).sum() else f"{total:.1e}"
    return (f"v = [{fmt(f'{e:.2f}' for e in state.v)}] &nbsp; mean(v) = {state.v.mean():.3f} &nbsp; "
            f"v - mean(v) = [{fmt(f'{e:.2f}' for e in state.total)}] &nbsp; sum = {shown}")


class TriangleExplorer(Explorer):
    """B, the kind of upstream v and (live only) hand-set values; the figure shows each path's share of dx."""

    GRID = {"B": Grid("B", tuple(range(B_MIN, B_MAX + 1))),
            "kind": Grid("upstream v", PRESET_KINDS, dropdown=True)}
    NOTE = ", where you can also type your own v"

    def compute(self, B, kind, values, seed):
        """The triangle's state for this setting."""
        return triangle_state(B, kind, values, seed)

    def figure(self, state):
        """The bars and the heatmap."""
        return triangle_figure(state)

    def describe(self, state):
        """Alt text for the figure of `state`."""
        return describe(state)

    def summary(self, state):
        """The numbers of v and of the sum."""
        return summary_html(state)

    def live_controls(self):
        """A B slider, the kind of v, and a text field for hand-set values."""
        s = self.setting
        return {"B": widgets.IntSlider(value=s["B"], min=B_MIN, max=B_MAX, description="B", style=STYLE),
                "kind": widgets.Dropdown(options=KINDS, value=s["kind"], description="upstream v", style=STYLE),
                "values": widgets.Text(value=s["values"], description="hand-set values", style=STYLE,
                                       placeholder="e.g. 1, 0, -2, 0.5", continuous_update=False)}


def describe(state: TriangleState) -> str:
    """What the triangle figure shows, in words (its alt text)."""
    vanish = "all zero" if np.allclose(state.total, 0, atol=1e-12) else "not all zero"
    return (f"Left: for B = {state.B} and a {state.kind} upstream gradient v = dL/dxbar, three bars per index of x: "
            f"the direct path sends v, the path through mu sends -mean(v) = {-state.v.mean():.2f} to every entry, "
            f"and their sum v - mean(v) is {vanish}. Right: heatmap of the {state.B} by {state.B} "
            f"Jacobian I - 11^T/B, 1 - 1/B on the diagonal and -1/B elsewhere.")


def triangle_explorer(B: int = 4, kind: str = "random", values: str = "1, 0, -2, 0.5", seed: int = 0,
                      static: bool | None = None) -> TriangleExplorer:
    """The triangle explorer for a notebook cell (static: see `bnbackprop.widgets.base`)."""
    check_choice(B, kind)
    return TriangleExplorer(dict(B=B, kind=kind, values=values, seed=seed), static)


__all__ = [
    "B_MAX",
    "B_MIN",
    "KINDS",
    "PRESET_KINDS",
    "TriangleExplorer",
    "TriangleState",
    "check_choice",
    "describe",
    "parse_values",
    "summary_html",
    "triangle_explorer",
    "triangle_figure",
    "triangle_graph",
    "triangle_state",
    "upstream",
]
