"""Drawing: the figure holds one arrow per edge, and the highlighted ones are red."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

import bnbackprop as bn  # noqa: E402
from bnbackprop import engine  # noqa: E402
from bnbackprop.draw import HIGHLIGHT, draw_graph, draw_jacobian  # noqa: E402


@pytest.fixture
def graph():
    rng = np.random.default_rng(31)
    return bn.batchnorm_graph(rng.normal(2.0, 3.0, (5, 3)), rng.normal(size=3), rng.normal(size=3))


def test_every_edge_is_drawn_and_only_the_triangle_is_red(graph):
    drawing = draw_graph(graph.y, highlight=graph.triangle(), edge_labels=True)
    edges = engine.all_edges(graph.y)
    assert set(drawing.edge_artists) == set(edges)
    assert sum(p in drawing.ax.patches for p in drawing.edge_artists.values()) == len(edges)
    red = [e for e, p in drawing.edge_artists.items() if p.get_edgecolor() == to_rgba(HIGHLIGHT)]
    assert set(red) == set(graph.triangle()) and len(red) == 3
    labels = {t.get_text() for t in drawing.ax.texts}
    assert {"$\\mu$", "$\\bar{x}$", "$\\hat{x}$", "$y$"} <= labels
    assert {"1/5", "-1"} <= labels  # the edge labels carry the local derivatives
    plt.close(drawing.fig)


def test_parallel_edges_of_a_times_a_are_both_drawn():
    a = bn.engine.leaf(np.ones((2, 2)), "x")
    out = (a * a).named("y")
    drawing = draw_graph(out)
    paths = [p.get_path().vertices for p in drawing.edge_artists.values()]
    assert len(paths) == 2 and not np.allclose(paths[0], paths[1])
    plt.close(drawing.fig)


def test_annotations_appear_under_their_nodes(graph):
    drawing = draw_graph(graph.y, annotations={"xmu": "g - mean(g)"})
    assert "g - mean(g)" in {t.get_text() for t in drawing.ax.texts}
    plt.close(drawing.fig)


def test_inputs_sit_left_of_their_consumers(graph):
    drawing = draw_graph(graph.y)
    x_of = lambda name: drawing.positions[id(graph[name])][0]
    assert x_of("x") < x_of("mu") < x_of("xmu") < x_of("var") < x_of("xhat") < x_of("y")
    assert x_of("gamma") < x_of("gxhat") and x_of("beta") < x_of("y")
    plt.close(drawing.fig)


def test_jacobian_heatmap_shows_the_matrix():
    J = np.eye(4) - 0.25
    fig, ax, image = draw_jacobian(J, title="centering")
    np.testing.assert_allclose(image.get_array(), J)
    assert len(ax.texts) == 16 and ax.get_title() == "centering"
    plt.close(fig)


def test_bad_drawing_input():
    with pytest.raises(ValueError, match="draw_graph needs an engine Node"):
        draw_graph(np.ones(3))
    with pytest.raises(ValueError, match=r"draw_jacobian needs a 2-D matrix; got shape \(3,\)"):
        draw_jacobian(np.ones(3))
