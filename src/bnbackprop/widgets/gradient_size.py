"""Where the gradient is large or small: |dx| against var, the spread of dy, and dy's alignment with xhat.

One channel of B values: x = x_mean + sqrt(var) * z and dy = dy_mean + dy_spread * w, with z and w
standardized (mean 0, mean square 1) and w = rho * z + sqrt(1 - rho^2) * w_perp. Then

    rms(dx) = |gamma| * dy_spread * sqrt(1 - rho^2 + rho^2 * (eps / (var + eps))^2) / sqrt(var + eps),

exactly: the mean of dy and (at eps = 0) its part along xhat are projected out, and what is left
is divided by s = sqrt(var + eps). `gradient_size` computes dx with `bnbackprop.backward` and the
closed form side by side; `draw_gradient_size` plots them; `gradient_size_explorer` adds sliders
(`bnbackprop.widgets.base`).
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from ..batchnorm import backward, normalize_forward
from .base import STYLE, Explorer, Grid

DEFAULTS = dict(var=1.0, dy_spread=1.0, rho=0.0, dy_mean=0.0, eps=1e-5, gamma=1.0)


@dataclass(frozen=True)
class GradientSize:
    """One setting's x, dy, dx, and the measured and closed-form rms of dx."""

    x: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    rms_dx: float
    predicted: float
    setting: dict  # the keyword arguments of gradient_size that gave this result


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
    setting = dict(var=var, dy_spread=dy_spread, rho=rho, dy_mean=dy_mean, eps=eps, gamma=gamma, B=B, seed=seed)
    return GradientSize(x.ravel(), dy.ravel(), dx.ravel(), rms, float(predicted_rms(var, dy_spread, rho, eps, gamma)),
                        setting)


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


class GradientSizeExplorer(Explorer):
    """Sliders for var, dy's spread, mean and alignment, and eps; the figure shows rms(dx) against var."""

    GRID = {"var": Grid("var", (1e-8, 1e-5, 1e-2, 10.0, 1e4), fmt="{:.0e}"),
            "rho": Grid("rho(dy, x)", (0.0, 0.6, 1.0), fmt="{:g}"),
            "eps": Grid("eps", (1e-5, 1e-2), fmt="{:.0e}")}
    NOTE = ", where dy's spread and mean move too and every slider moves finely"

    def compute(self, **setting):
        """The gradient size for this setting."""
        return gradient_size(**setting)

    def figure(self, state):
        """rms(dx) against var (left) and this setting's dy and dx (right)."""
        return draw_gradient_size(**state.setting)

    def describe(self, state):
        """Alt text for the figure of `state`."""
        s = state.setting
        return (f"Left: log-log plot of rms(dx) against the variance, from 1e-8 to 1e4, for dy spread "
                f"{s['dy_spread']:g}, rho = {s['rho']:g} and eps = {s['eps']:.0e}: measured points on the closed-form "
                f"curve, which falls as one over the standard deviation and is capped below var = eps; a star marks "
                f"var = {s['var']:.0e}. Right: dy and dx of the {state.x.size} samples against x; "
                f"rms(dx) = {state.rms_dx:.3g}.")

    def summary(self, state):
        """Measured and closed-form rms(dx), and rms(dy)."""
        return (f"rms(dx) = {state.rms_dx:.4g} (closed form {state.predicted:.4g}); "
                f"rms(dy) = {np.sqrt(np.mean(state.dy ** 2)):.4g}")

    def live_controls(self):
        """One slider per setting but gamma."""
        s, w = self.setting, widgets
        return {"var": w.FloatLogSlider(value=s["var"], base=10, min=-8, max=4, description="var", style=STYLE),
                "dy_spread": w.FloatSlider(value=s["dy_spread"], min=0, max=3, step=0.1, description="dy spread", style=STYLE),
                "rho": w.FloatSlider(value=s["rho"], min=-1, max=1, step=0.05, description="rho(dy, x)", style=STYLE),
                "dy_mean": w.FloatSlider(value=s["dy_mean"], min=-3, max=3, step=0.1, description="dy mean", style=STYLE),
                "eps": w.FloatLogSlider(value=s["eps"], base=10, min=-8, max=0, description="eps", style=STYLE)}

    def layout(self, controls):
        """Two columns of sliders."""
        return widgets.HBox([widgets.VBox(controls[:3]), widgets.VBox(controls[3:])])


def gradient_size_explorer(static: bool | None = None, **setting) -> GradientSizeExplorer:
    """The interactive explorer for a notebook cell (static: see `bnbackprop.widgets.base`)."""
    return GradientSizeExplorer(DEFAULTS | dict(B=32, seed=0) | setting, static)


__all__ = ["GradientSize", "GradientSizeExplorer", "draw_gradient_size", "gradient_size", "gradient_size_explorer", "predicted_rms"]
