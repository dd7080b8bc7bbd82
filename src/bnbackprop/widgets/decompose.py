"""Chapter 4's widget: dx split into its three parts, g, -mean(g) and -xhat*mean(g*xhat), all over s.

`decompose` is the pure computation, `decompose_figure` draws it, and `DecomposeExplorer` puts
text fields and sliders on top. The batch is one channel of B values that the reader types.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .._validate import check_finite
from ..batchnorm import backward, forward
from ._common import figure_png, parse_values

DEFAULT_X = "4.0, 7.5, 5.0, 9.0, 6.5, 3.0"
DEFAULT_DY = "0.8, 1.2, -0.6, 1.5, -1.0, -0.4"
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


class DecomposeExplorer(widgets.VBox):
    """Text fields for x and dy, sliders for gamma and eps; the figure redraws when any of them moves."""

    def __init__(self, x=DEFAULT_X, dy=DEFAULT_DY, gamma=1.5, eps=1e-5):
        self.result = decompose(x, dy, gamma, eps)  # bad initial values raise here, before any widget exists
        style = {"description_width": "110px"}
        layout = widgets.Layout(width="520px")
        # Redraw on Enter or release, not on every keystroke: a half-typed list is not an error.
        text = dict(style=style, layout=layout, continuous_update=False)
        self.x_text = widgets.Text(value=_text(x), description="x values", **text)
        self.dy_text = widgets.Text(value=_text(dy), description="dy values", **text)
        self.gamma = widgets.FloatSlider(value=gamma, min=-3.0, max=3.0, step=0.1, description="gamma",
                                         style=style, continuous_update=False)
        self.eps = widgets.FloatLogSlider(value=eps, base=10, min=-8, max=1, step=0.5, description="eps",
                                          readout_format=".0e", style=style, continuous_update=False)
        self.message = widgets.HTML(value="")
        self.image = widgets.Image(format="png", value=figure_png(decompose_figure(self.result)))
        for control in (self.x_text, self.dy_text, self.gamma, self.eps):
            control.observe(self._update, names="value")
        super().__init__([self.x_text, self.dy_text, self.gamma, self.eps, self.message, self.image])

    def _update(self, _change=None):
        """Recompute; on bad input keep the last good figure and say what is wrong."""
        try:
            result = decompose(self.x_text.value, self.dy_text.value, self.gamma.value, self.eps.value)
        except ValueError as err:
            self.message.value = f"<span style='color:#b00'>{_escape(str(err))}</span>"
            return
        self.result, self.message.value = result, ""
        self.image.value = figure_png(decompose_figure(result))


def _text(v) -> str:
    """Show a list of values in the text field as the reader would type them."""
    return v if isinstance(v, str) else ", ".join(f"{float(a):g}" for a in v)


def _escape(text: str) -> str:
    """Keep a message's < and & from being read as HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def decompose_explorer(x=DEFAULT_X, dy=DEFAULT_DY, gamma=1.5, eps=1e-5) -> DecomposeExplorer:
    """The interactive widget: edit the batch and dy, move gamma and eps, watch the three parts of dx."""
    return DecomposeExplorer(x, dy, gamma, eps)


__all__ = [
    "DEFAULT_DY",
    "DEFAULT_X",
    "PART_COLORS",
    "PART_LABELS",
    "DecomposeExplorer",
    "Decomposition",
    "decompose",
    "decompose_explorer",
    "decompose_figure",
]
