"""The graph layout is readable: no overlapping boxes or labels, long edges go around nodes."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnbackprop import engine  # noqa: E402
from bnbackprop.bngraph import batchnorm_graph  # noqa: E402
from bnbackprop.draw import draw_graph, draw_jacobian, edge_label, layout  # noqa: E402


@pytest.fixture(scope="module")
def bn():
    rng = np.random.default_rng(7)
    return batchnorm_graph(rng.normal(2.0, 3.0, size=(5, 3)), rng.normal(size=3), rng.normal(size=3))


def boxes(d):
    """Display-space extents of every node box."""
    r = d.fig.canvas.get_renderer()
    return {n: t.get_bbox_patch().get_window_extent(r) for n, t in d.node_artists.items()}


@pytest.mark.parametrize("edge_labels", [False, True])
def test_node_boxes_do_not_overlap(bn, edge_labels):
    d = draw_graph(bn.y, highlight=bn.triangle(), edge_labels=edge_labels)
    d.fig.canvas.draw()
    found = boxes(d)
    assert len(found) == 13
    for (a, ba), (b, bb) in itertools.combinations(found.items(), 2):
        assert not ba.overlaps(bb), f"{a.name} and {b.name} overlap"
    plt.close(d.fig)


def test_edge_labels_stay_clear_of_nodes_and_of_each_other(bn):
    d = draw_graph(bn.y, edge_labels=True)
    d.fig.canvas.draw()
    r = d.fig.canvas.get_renderer()
    labels = [t for t in d.ax.texts if t not in d.node_artists.values()]
    assert len(labels) == len(d.edge_artists)
    extents = [t.get_window_extent(r) for t in labels]
    for box in boxes(d).values():
        assert not any(box.overlaps(e) for e in extents)
    for a, b in itertools.combinations(extents, 2):
        assert not a.overlaps(b)
    plt.close(d.fig)


def test_no_edge_passes_through_a_node_it_does_not_touch(bn):
    d = draw_graph(bn.y)
    d.fig.canvas.draw()
    found = boxes(d)
    for edge, arrow in d.edge_artists.items():
        path = arrow.get_path().transformed(d.ax.transData)
        pts = path.interpolated(40).vertices
        for node, box in found.items():
            if node in (edge.src, edge.dst):
                continue
            inside = (pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)
            assert not inside.any(), f"{edge} crosses {node.name}"
    plt.close(d.fig)


def test_inputs_sit_left_of_their_consumers_and_the_triangle_is_a_triangle(bn):
    pos = layout(bn.y)
    for node in engine.topological_order(bn.y):
        for e in node.edges:
            assert pos[id(e.src)][0] < pos[id(node)][0]
    x, mu, xmu = (pos[id(bn[k])] for k in ("x", "mu", "xmu"))
    # mu is off the line from x to xmu, so the three red edges enclose an area
    area = abs((mu[0] - x[0]) * (xmu[1] - x[1]) - (xmu[0] - x[0]) * (mu[1] - x[1])) / 2
    assert area > 0.1
    assert pos[id(bn.y)][1] == 0.0


def test_variance_branch_is_on_its_own_row(bn):
    pos = layout(bn.y)
    branch = np.array([pos[id(bn[k])][1] for k in ("xmusq", "var", "vareps", "s", "inv_s")])
    spine = np.array([pos[id(bn[k])][1] for k in ("xmu", "xhat")])
    # the main row x -> xmu -> xhat -> y is straight; the branch is a straight row beside it
    assert np.all(spine == 0) and pos[id(bn["x"])][1] == 0
    assert np.ptp(branch) == 0 and abs(branch[0]) >= 0.5


def test_parallel_edges_of_a_times_a_are_drawn_apart():
    a = engine.leaf(np.arange(3.0) + 1, "x")
    out = (a * a).sum().named("y")
    d = draw_graph(out, edge_labels=True)
    first, second = [arr.get_path().vertices for e, arr in d.edge_artists.items() if e.dst.op == "*"]
    assert np.max(np.abs(first - second)) > 0.1
    plt.close(d.fig)


def test_highlighted_edges_are_red_and_thick(bn):
    d = draw_graph(bn.y, highlight=bn.triangle())
    red = [e for e, arr in d.edge_artists.items() if arr.get_linewidth() > 2]
    assert {(e.src.name, e.dst.name) for e in red} == {("x", "mu"), ("x", "xmu"), ("mu", "xmu")}
    plt.close(d.fig)


def test_drawing_into_a_given_axes_and_bad_input():
    fig, ax = plt.subplots(figsize=(6, 3))
    a = engine.leaf(np.ones(2), "x")
    d = draw_graph((a - a.mean(keepdims=True)).named("xmu"), ax=ax, title="centering")
    assert d.ax is ax and d.fig is fig and ax.get_title() == "centering"
    assert tuple(fig.get_size_inches()) == (6, 3)
    with pytest.raises(ValueError, match="engine Node"):
        draw_graph(np.ones(3))
    plt.close(fig)


def test_edge_labels_use_the_name_table_symbols(bn):
    labels = {(e.src.name, e.dst.name): edge_label(e) for e in engine.all_edges(bn.y)}
    assert labels[("x", "mu")] == "1/5"
    assert labels[("s", "inv_s")] == r"$-1\,s^{-2}$"
    assert labels[("vareps", "s")] == r"$0.5\,(\sigma^2+\epsilon)^{-0.5}$"
    assert labels[("xmu", "xmusq")] == r"$2\,\bar{x}$"


@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (5, 5), (3, 40)])
def test_jacobian_ticks_are_whole_indices(shape):
    J = np.random.default_rng(1).standard_normal(shape)
    fig, ax, image = draw_jacobian(J)
    for ticks, n in ((ax.get_xticks(), shape[1]), (ax.get_yticks(), shape[0])):
        inside = ticks[(ticks >= 0) & (ticks <= n - 1)]
        assert len(inside) >= min(n, 2) and np.all(inside == np.round(inside))
    np.testing.assert_array_equal(image.get_array(), J)
    plt.close(fig)


def test_draw_jacobian_refuses_a_non_matrix():
    with pytest.raises(ValueError, match="2-D"):
        draw_jacobian(np.ones(3))
