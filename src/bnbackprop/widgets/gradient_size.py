"""Where the gradient is large or small: |dx| against var, the spread of dy, and dy's alignment with xhat.

One channel of B values: x = x_mean + sqrt(var) * z and dy = dy_mean + dy_spread * w, with z and w
standardized (mean 0, mean square 1) and w = rho * z + sqrt(1 - rho^2) * w_perp. Then

    rms(dx) = |gamma| * dy_spread * sqrt(1 - rho^2 + rho^2 * (eps / (var + eps))^2) / sqrt(var + eps),

exactly: the mean of dy and (at eps = 0) its part along xhat are projected out, and what is left
is divided by s = sqrt(var + eps). `gradient_size` computes dx with `bnbackprop.backward` and the
closed form side by side; `draw_gradient_size` plots them; `gradient_size_explorer` adds sliders.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from ..batchnorm import backward, normalize_forward
from ._common import figure_png

DEFAULTS = dict(var=1.0, dy_spread=1.0, rho=0.0, dy_mean=0.0, eps=1e-5, gamma=1.0)


@dataclass(frozen=True)
class GradientSize:
    """One setting's x, dy, dx, and the measured and closed-form rms of dx."""

    x: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    rms_dx: float
    predicted: float


def _standardized_pair(B: int, seed: int):
    """z and w_perp: mean 0, mean square 1, and orthogonal to each other."""
    rng = np.random.default_rng(seed)
    z, w = rng.standard_normal((2, B))
    z -= z.mean()
    z /= np.sqrt(np.mean(z * z))
    w -= w.mean() + z * np.mean(w * z)
    w /= np.sqrt(np.mean(w * w))
    return z, w


def predicted_rms(var, dy_spread, rho=0.0, eps=1e-5, gamma=1.0):
    """The closed form for rms(dx); works elementwise on arrays of var."""
    var = np.asarray(var, dtype=float)
    kept = 1 - rho**2 + rho**2 * (eps / (var + eps)) ** 2
    return abs(gamma) * dy_spread * np.sqrt(kept) / np.sqrt(var + eps)


def _check_setting(var, dy_spread, rho, eps, B):
    """Refuse settings outside the model: negative var or spread, |rho| > 1, var + eps = 0, B < 3."""
    if not (np.isfinite(var) and var >= 0 and np.isfinite(eps) and eps >= 0 and var + eps > 0):
        raise ValueError(f"need var >= 0, eps >= 0 and var + eps > 0; got var={var!r}, eps={eps!r}")
    if not (np.isfinite(dy_spread) and dy_spread >= 0):
        raise ValueError(f"dy_spread is a standard deviation, so it must be >= 0; got {dy_spread!r}")
    if not -1 <= rho <= 1:
        raise ValueError(f"rho is a correlation, so it must be in [-1, 1]; got {rho!r}")
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 3:
        raise ValueError(f"B must be an integer >= 3 so that z and w_perp exist; got {B!r}")


def gradient_size(var=1.0, dy_spread=1.0, rho=0.0, dy_mean=0.0, eps=1e-5, gamma=1.0, B=32, seed=0):
    """dx of one channel of B values with the given variance and dy; see the module docstring."""
    _check_setting(var, dy_spread, rho, eps, B)
    z, w_perp = _standardized_pair(B, seed)
    x = (0.5 + np.sqrt(var) * z).reshape(B, 1)
    dy = (dy_mean + dy_spread * (rho * z + np.sqrt(1 - rho**2) * w_perp)).reshape(B, 1)
    if var == 0:
        # A constant channel: xhat = 0 exactly, which rounding in x - mu would spoil.
        x = np.full((B, 1), 0.5)
    one = np.array([[float(gamma)]])
    _, cache = normalize_forward(x, one, np.zeros((1, 1)), (0,), eps, 0)
    dx = backward(dy, cache)[0]
    rms = float(np.sqrt(np.mean(dx * dx)))
    return GradientSize(x.ravel(), dy.ravel(), dx.ravel(), rms, float(predicted_rms(var, dy_spread, rho, eps, gamma)))


def draw_gradient_size(var=1.0, dy_spread=1.0, rho=0.0, dy_mean=0.0, eps=1e-5, gamma=1.0, B=32, seed=0):
    """Left: rms(dx) against var, measured and closed form. Right: dy and dx per sample."""
    now = gradient_size(var, dy_spread, rho, dy_mean, eps, gamma, B, seed)
    grid = np.logspace(-8, 4, 49)
    measured = [gradient_size(v, dy_spread, rho, dy_mean, eps, gamma, B, seed).rms_dx for v in grid]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.loglog(grid, predicted_rms(grid, dy_spread, rho, eps, gamma), color="C0", label="closed form")
    left.loglog(grid, measured, "o", ms=3, color="C1", label="backward(dy, cache)")
    left.loglog(grid, abs(gamma) * dy_spread / np.sqrt(grid), ":", color="gray", label=r"$|\gamma|\,\sigma_{dy}/\sigma$")
    left.axvline(eps, color="gray", lw=0.8, ls="--")
    left.plot([var], [now.rms_dx], "*", ms=14, color="C3", label="this setting")
    left.set(xlabel=r"var $\sigma^2$", ylabel="rms of dx", title=f"eps = {eps:.0e} (dashed line)")
    left.legend(fontsize=8, loc="lower left")
    order = np.argsort(now.x)
    right.plot(now.x[order], now.dy[order], "o", ms=4, color="C0", label="dy")
    right.plot(now.x[order], now.dx[order], "s", ms=4, color="C3", label="dx")
    right.axhline(0, color="gray", lw=0.8)
    right.set(xlabel="x", title=f"rms(dx) = {now.rms_dx:.3g}")
    right.legend(fontsize=8)
    # Fixed margins: tight_layout measures every log-axis label and would double each redraw's time.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.91, wspace=0.22)
    return fig


class GradientSizeExplorer:
    """Sliders for var, dy's spread, mean and alignment, and eps; an Image shows the figure."""

    def __init__(self, **setting):
        import ipywidgets as w

        s = {**DEFAULTS, **setting}
        self.controls = {
            "var": w.FloatLogSlider(value=s["var"], base=10, min=-8, max=4, description="var"),
            "dy_spread": w.FloatSlider(value=s["dy_spread"], min=0, max=3, step=0.1, description="dy spread"),
            "rho": w.FloatSlider(value=s["rho"], min=-1, max=1, step=0.05, description="rho(dy, x)"),
            "dy_mean": w.FloatSlider(value=s["dy_mean"], min=-3, max=3, step=0.1, description="dy mean"),
            "eps": w.FloatLogSlider(value=s["eps"], base=10, min=-8, max=0, description="eps"),
        }
        self.gamma = s["gamma"]
        self.image = w.Image(format="png")
        self.readout = w.HTML()
        self.box = w.VBox([w.HBox([w.VBox(list(self.controls.values())[:3]), w.VBox(list(self.controls.values())[3:])]),
                           self.readout, self.image])
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    def setting(self) -> dict:
        """The current slider values as keyword arguments of `gradient_size`."""
        return {k: c.value for k, c in self.controls.items()} | {"gamma": self.gamma}

    def update(self, change=None) -> None:
        """Recompute and redraw from the current slider values."""
        self.result = gradient_size(**self.setting())
        self.readout.value = (f"rms(dx) = {self.result.rms_dx:.4g} (closed form {self.result.predicted:.4g}); "
                              f"rms(dy) = {np.sqrt(np.mean(self.result.dy ** 2)):.4g}")
        self.image.value = figure_png(draw_gradient_size(**self.setting()), dpi=80)


def gradient_size_explorer(**setting) -> GradientSizeExplorer:
    """Build the interactive explorer; show it with `explorer.box`."""
    return GradientSizeExplorer(**setting)


__all__ = ["GradientSize", "GradientSizeExplorer", "draw_gradient_size", "gradient_size", "gradient_size_explorer", "predicted_rms"]
