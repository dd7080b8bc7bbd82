"""Interactive widgets for the chapters. Each module keeps its computation in plain functions,
tested without a browser, and builds the ipywidgets controls on top of them."""
