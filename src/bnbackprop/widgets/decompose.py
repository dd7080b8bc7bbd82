"""Chapter 4's widget: dx split into its three parts, g, -mean(g) and -xhat*mean(g*xhat), all over s.

`decompose` is the pure computation, `decompose_figure` draws it, and `DecomposeExplorer` puts
text fields and sliders on top (`bnbackprop.widgets.base`). The batch is one channel of B values
that the reader types, or one of PRESETS on a static page.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .._validate import check_finite
from ..batchnorm import backward, forward
from ._common import parse_values
from .base import STYLE, Explorer, Grid

DEFAULT_X = "4.0, 7.5, 5.0, 9.0, 6.5, 3.0"
DEFAULT_DY = "0.8, 1.2, -0.6, 1.5, -1.0, -0.4"
# The batches a static page offers in place of typed text: each shows one thing the chapter says.
PRESETS = {
    "default": (DEFAULT_X, DEFAULT_DY),
    "constant dy": (DEFAULT_X, "0.7, 0.7, 0.7, 0.7, 0.7, 0.7"),  # dx = 0: the centering removes it
    "dy = x": (DEFAULT_X, DEFAULT_X),  # in the span of 1 and xhat: dx = 0 at eps = 0, not at large eps
    "one large dy": (DEFAULT_X, "0, 0, 0, 3, 0, 0"),
}
PART_LABELS = (r"$g/s$", r"$-\mathrm{mean}(g)/s$", r"$-\hat{x}\,\mathrm{mean}(g\hat{x})/s$")
PART_COLORS = ("tab:blue", "tab:orange", "tab:green")


@dataclass(frozen=True)
class Decomposition:
    """One channel's dx and its three parts (each already divided by s), plus the backward's own dx."""

    x: np.ndarray
    dy: np.ndarray
    gamma: float
    eps: float
    xhat: np.ndarray
    s: float
    parts: tuple[np.ndarray, np.ndarray, np.ndarray]
    dx: np.ndarray  # from bnbackprop.backward, not from the parts

    @property
    def total(self) -> np.ndarray:
        """The sum of the three parts."""
        return self.parts[0] + self.parts[1] + self.parts[2]


def _as_values(v, name: str) -> np.ndarray:
    """Text is parsed; anything else must already be a 1-D sequence of numbers."""
    if isinstance(v, str):
        return parse_values(v, name)
    arr = np.asarray(v, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a 1-D list of values, one per sample")
    check_finite(arr, name)
    return arr


def decompose(x=DEFAULT_X, dy=DEFAULT_DY, gamma=1.5, eps=1e-5) -> Decomposition:
    """Split dx of one channel into g/s, -mean(g)/s and -xhat*mean(g*xhat)/s; x and dy are text or 1-D."""
    x, dy = _as_values(x, "x"), _as_values(dy, "dy")
    if x.size != dy.size:
        raise ValueError(f"x has {x.size} values but dy has {dy.size}; give one upstream gradient per value of x")
    if not np.isscalar(gamma) or not np.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number; got {gamma!r}")
    _, cache = forward(x[:, None], [gamma], [0.0], eps=eps)
    dx = backward(dy[:, None], cache)[0][:, 0]
    xhat, s = cache.xhat[:, 0], float(cache.s[0, 0])
    g = gamma * dy
    parts = (g / s, np.full_like(g, -g.mean() / s), -xhat * (g * xhat).mean() / s)
    return Decomposition(x, dy, float(gamma), float(eps), xhat, s, parts, dx)


def decompose_figure(d: Decomposition, ax=None):
    """Grouped bars of the three parts per sample, with dx from `bnbackprop.backward` as black ticks."""
    if not isinstance(d, Decomposition):
        raise ValueError(f"decompose_figure needs the Decomposition that decompose() returns; got {type(d).__name__}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(9, 3.6))
    idx, width = np.arange(d.x.size), 0.26
    for k, (part, label, color) in enumerate(zip(d.parts, PART_LABELS, PART_COLORS)):
        ax.bar(idx + (k - 1) * width, part, width, label=label, color=color)
    ax.plot(idx, d.dx, linestyle="none", marker="_", markersize=34, mew=3, color="black",
            label=r"$\partial L/\partial x$ from backward")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(idx, [f"$x_{{{i + 1}}}$={v:g}\n$\\hat{{x}}$={h:.2f}" for i, (v, h) in enumerate(zip(d.x, d.xhat))],
                  fontsize=8)
    ax.set_ylabel("contribution to $\\partial L/\\partial x_i$")
    match = np.allclose(d.total, d.dx, rtol=1e-10, atol=1e-12 * np.abs(d.parts).max())
    ax.set_title(f"$\\gamma$={d.gamma:g}, $\\epsilon$={d.eps:.0e}, s={d.s:.3f}: "
                 f"sum of parts {'=' if match else '≠'} backward's dx", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.4, frameon=False)
    fig.tight_layout()
    return fig


class DecomposeExplorer(Explorer):
    """The batch and dy (text, live only; presets on a static page), gamma and eps; the figure splits dx."""

    GRID = {"batch": Grid("x and dy", tuple(PRESETS), dropdown=True),
            "gamma": Grid("gamma", (-1.0, 0.5, 1.5), fmt="{:g}"),
            "eps": Grid("eps", (1e-5, 1e-2, 1e-1, 1.0), fmt="{:.0e}")}
    NOTE = ", where you can type your own x and dy and move gamma and eps finely"

    def compute(self, batch, x, dy, gamma, eps):
        """The decomposition for this setting: a preset batch, or typed x and dy when batch is None."""
        if batch is not None:
            if batch not in PRESETS:
                raise ValueError(f"batch must be one of {', '.join(PRESETS)} or None; got {batch!r}")
            x, dy = PRESETS[batch]
        return decompose(x, dy, gamma, eps)

    def figure(self, state):
        """The three bar groups and backward's dx."""
        return decompose_figure(state)

    def describe(self, state):
        """Alt text for the figure of `state`."""
        biggest = int(np.argmax(np.abs(state.dx)))
        return (f"Grouped bars for {state.x.size} samples with gamma = {state.gamma:g} and eps = {state.eps:.0e}: "
                f"the parts g/s, -mean(g)/s and -xhat mean(g xhat)/s of dL/dx for each sample, with black ticks "
                f"at dL/dx from backward, which sit at the sum of the bars. The largest |dL/dx| is "
                f"{abs(state.dx[biggest]):.2g}, at x_{biggest + 1}.")

    def live_controls(self):
        """Text fields for x and dy, sliders for gamma and eps."""
        s = self.setting
        x, dy = PRESETS[s["batch"]] if s["batch"] is not None else (s["x"], s["dy"])
        text = dict(style=STYLE, layout=widgets.Layout(width="520px"), continuous_update=False)
        # Redraw on Enter or release, not on every keystroke: a half-typed list is not an error.
        return {"x": widgets.Text(value=_text(x), description="x values", **text),
                "dy": widgets.Text(value=_text(dy), description="dy values", **text),
                "gamma": widgets.FloatSlider(value=s["gamma"], min=-3.0, max=3.0, step=0.1, description="gamma",
                                             style=STYLE, continuous_update=False),
                "eps": widgets.FloatLogSlider(value=s["eps"], base=10, min=-8, max=1, step=0.5, description="eps",
                                              readout_format=".0e", style=STYLE, continuous_update=False)}

    def current(self):
        """The live controls' values; typed text replaces the preset batch."""
        return super().current() | {"batch": None}

    def layout(self, controls):
        """One control per line: the text fields are wide."""
        return widgets.VBox(controls)


def _text(v) -> str:
    """Show a list of values in the text field as the reader would type them."""
    return v if isinstance(v, str) else ", ".join(f"{float(a):g}" for a in v)


def decompose_explorer(x=DEFAULT_X, dy=DEFAULT_DY, gamma=1.5, eps=1e-5, batch="default",
                       static: bool | None = None) -> DecomposeExplorer:
    """Edit the batch and dy, move gamma and eps, watch the three parts of dx (static: see `.base`).

    batch names one of PRESETS; batch=None takes x and dy as given.
    """
    return DecomposeExplorer(dict(batch=batch, x=x, dy=dy, gamma=gamma, eps=eps), static)


__all__ = [
    "DEFAULT_DY",
    "DEFAULT_X",
    "PART_COLORS",
    "PART_LABELS",
    "PRESETS",
    "DecomposeExplorer",
    "Decomposition",
    "decompose",
    "decompose_explorer",
    "decompose_figure",
]
