"""Interactive widgets for the chapters. Each module keeps its computation in plain functions,
tested without a browser, and builds the ipywidgets controls on top of them."""

from .._extras import require

require("ipywidgets", "widgets", __name__)  # the extra [widgets]; fail here with its name, not deep inside


__all__: list[str] = []  # import the widgets from their modules: bnbackprop.widgets.triangle, ...
