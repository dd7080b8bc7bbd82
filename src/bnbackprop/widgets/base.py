"""The one shape every explorer has: `compute` a state from a setting, draw its `figure`, show both.

An explorer is live or static:

- live (a reader's kernel): every control change runs `refresh`, which recomputes and redraws.
  Free-text fields and fine sliders work here.
- static (the saved notebook and the HTML book, no kernel): every figure of a small grid of control
  values is drawn in advance by the same `compute` and `figure`, and nested `Stack`s show one of
  them. Each grid control's `index` drives its Stacks' `selected_index` through `jsdlink`, which
  runs in the browser, so the page responds offline. Controls that need a kernel are left out
  and a note says where they work.

`tools/run_notebooks.py` sets BNBACKPROP_STATIC_WIDGETS=1 while it stores the book's outputs, so
the saved state is static; a reader who runs the cell gets the live explorer.
"""

from __future__ import annotations

import html
import itertools
import os
from dataclasses import dataclass

import ipywidgets as widgets

from ._common import figure_bytes, figure_html

STATIC_ENV = "BNBACKPROP_STATIC_WIDGETS"
STYLE = {"description_width": "initial"}
WHERE_LIVE = ("On this page the controls step through figures computed in advance. Run the notebook "
              "(JupyterLab, or a launch button at the top of the page) for the live explorer")


@dataclass(frozen=True)
class Grid:
    """The values a static page offers for one control, with the label the reader sees."""

    label: str
    values: tuple
    fmt: str = "{}"
    dropdown: bool = False

    def options(self) -> list[tuple[str, object]]:
        """(shown text, value) pairs for a Dropdown or SelectionSlider."""
        return [(self.fmt.format(v), v) for v in self.values]


def static_default() -> bool:
    """Static when the book's outputs are being stored, live otherwise."""
    return os.environ.get(STATIC_ENV, "") == "1"


class Explorer:
    """Base of the explorers: subclasses define GRID, NOTE, compute, figure, describe, summary, live_controls."""

    GRID: dict[str, Grid] = {}
    NOTE = ""  # what the static page leaves out, ending the sentence WHERE_LIVE starts
    DPI = 80

    def __init__(self, setting: dict, static: bool | None = None):
        self.setting = dict(setting)
        self.state = self.compute(**self.setting)  # bad settings raise here, before any widget exists
        self.static = static_default() if static is None else bool(static)
        self.message = widgets.HTML()
        self.image = widgets.HTML()  # the figure: an <img> with alt text (figure_html)
        self.links: list = []
        self.controls = self._static_controls() if self.static else self.live_controls()
        self.box = self._static_box() if self.static else self._live_box()

    # -- what each explorer defines ------------------------------------------------------------
    def compute(self, **setting):
        """The state for one setting (pure; raises ValueError on a bad setting)."""
        raise NotImplementedError

    def figure(self, state):
        """A matplotlib figure of `state`."""
        raise NotImplementedError

    def describe(self, state) -> str:
        """Alt text: what the figure of `state` shows, in words."""
        raise NotImplementedError

    def summary(self, state) -> str:
        """One line of HTML under the controls (numbers of `state`)."""
        return ""

    def live_controls(self) -> dict[str, widgets.Widget]:
        """The kernel's controls, keyed by setting name, with the values of self.setting."""
        raise NotImplementedError

    def layout(self, controls: list) -> widgets.Widget:
        """How the controls are arranged above the message and the figure."""
        return widgets.HBox(controls)

    # -- shared --------------------------------------------------------------------------------
    def image_bytes(self, state) -> bytes:
        """The figure of `state` as the image bytes the page shows."""
        return figure_bytes(self.figure(state), dpi=self.DPI)

    def figure_html(self, state) -> str:
        """The figure of `state` as an <img> with its alt text."""
        return figure_html(self.image_bytes(state), self.describe(state))

    def current(self) -> dict:
        """The setting the live controls show now."""
        return self.setting | {name: c.value for name, c in self.controls.items()}

    def refresh(self, _change=None) -> None:
        """Recompute and redraw from the controls; a bad setting shows a message and keeps the last figure."""
        try:
            state = self.compute(**self.current())
        except ValueError as err:
            self.message.value = error_html(err)
            return
        self.state = state
        self.message.value = self.summary(state)
        self.image.value = self.figure_html(state)

    def _live_box(self) -> widgets.Widget:
        """Live: every control change calls refresh."""
        for control in self.controls.values():
            control.observe(self.refresh, names="value")
        self.refresh()
        return widgets.VBox([self.layout(list(self.controls.values())), self.message, self.image])

    def _static_controls(self) -> dict[str, widgets.Widget]:
        """One Dropdown or SelectionSlider per grid control, set to the explorer's setting."""
        controls = {}
        for name, grid in self.GRID.items():
            if self.setting[name] not in grid.values:
                raise ValueError(f"{name}={self.setting[name]!r} is not on the static grid {grid.values}")
            options = dict(options=grid.options(), value=self.setting[name], description=grid.label, style=STYLE)
            controls[name] = (widgets.Dropdown(**options) if grid.dropdown
                              else widgets.SelectionSlider(**options, continuous_update=True))
        return controls

    def _static_box(self) -> widgets.Widget:
        """Static: nested Stacks of precomputed figures, each following one control's index."""
        note = widgets.HTML(f"<small>{WHERE_LIVE}{self.NOTE}.</small>")
        return widgets.VBox([self.layout(list(self.controls.values())), note, self._stack(list(self.GRID), {})])

    def _stack(self, names: list[str], fixed: dict) -> widgets.Widget:
        """The Stack for the first of `names` (with the earlier controls at `fixed`), down to the leaves."""
        if not names:
            return self._leaf(fixed)
        name, rest = names[0], names[1:]
        children = [self._stack(rest, fixed | {name: v}) for v in self.GRID[name].values]
        stack = widgets.Stack(children, selected_index=self.controls[name].index)
        self.links.append(widgets.jsdlink((self.controls[name], "index"), (stack, "selected_index")))
        return stack

    def _leaf(self, grid_values: dict) -> widgets.Widget:
        """One precomputed state: its summary line and its figure."""
        state = self.compute(**(self.setting | grid_values))
        return widgets.VBox([widgets.HTML(self.summary(state)), widgets.HTML(self.figure_html(state))])

    def grid_settings(self) -> list[dict]:
        """Every setting the static page holds a figure for."""
        names = list(self.GRID)
        return [self.setting | dict(zip(names, values))
                for values in itertools.product(*(self.GRID[n].values for n in names))]

    def _repr_mimebundle_(self, **kwargs):
        """A cell that returns the explorer shows its widget."""
        return self.box._repr_mimebundle_(**kwargs)


def error_html(err: Exception) -> str:
    """A message line for a setting the explorer cannot use, escaped so that < and & stay text."""
    return f"<strong>Cannot use these values:</strong> {html.escape(str(err))}"


__all__ = ["STATIC_ENV", "Explorer", "Grid", "error_html", "static_default"]
