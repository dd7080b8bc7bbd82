"""Drawing engine graphs and Jacobians with matplotlib alone (no Graphviz)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch

from . import engine
from .names import symbol

HIGHLIGHT = "tab:red"
PLAIN = "0.45"


@dataclass
class GraphDrawing:
    """The figure of a drawn graph and the artists for each node and edge."""

    fig: plt.Figure
    ax: plt.Axes
    positions: dict
    node_artists: dict
    edge_artists: dict


def layers(out: engine.Node) -> dict[int, int]:
    """Layer of each node (by id): inputs go just left of their first consumer, the rest by longest path."""
    order = engine.topological_order(out)
    layer = {}
    for node in order:
        layer[id(node)] = 1 + max((layer[id(e.src)] for e in node.edges), default=-1)
    consumers = defaultdict(list)
    for node in order:
        for e in node.edges:
            consumers[id(e.src)].append(layer[id(node)])
    for node in order:
        if not node.edges and consumers[id(node)]:
            layer[id(node)] = max(0, min(consumers[id(node)]) - 1)
    return layer


def layout(out: engine.Node) -> dict[int, tuple[float, float]]:
    """(x, y) position of each node: x by layer, y spread within a layer."""
    layer = layers(out)
    columns = defaultdict(list)
    for node in engine.topological_order(out):
        columns[layer[id(node)]].append(node)
    pos = {}
    for col, nodes in columns.items():
        for k, node in enumerate(nodes):
            pos[id(node)] = (float(col), (len(nodes) - 1) / 2 - k)
    return pos


def node_label(node: engine.Node) -> str:
    """The math symbol for a named node, the op for an unnamed one."""
    return f"${symbol(node.name)}$" if node.name else node.op


def _edge_rads(edges):
    """Bend parallel edges (a*a) apart so that each use is visible."""
    groups = defaultdict(list)
    for e in edges:
        groups[(id(e.src), id(e.dst))].append(e)
    return {id(e): 0.35 * (k - (len(g) - 1) / 2) for g in groups.values() for k, e in enumerate(g)}


def draw_graph(out, highlight=(), annotations=None, edge_labels=False, ax=None, title=None) -> GraphDrawing:
    """Draw the graph of `out` in layers; `highlight` edges are red, `annotations` maps node or name to text."""
    if isinstance(out, engine.Edge) or not isinstance(out, engine.Node):
        raise ValueError(f"draw_graph needs an engine Node as its output; got {type(out).__name__}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(10, 4.5))
    pos, edges = layout(out), engine.all_edges(out)
    marked, rads = {id(e) for e in highlight}, _edge_rads(edges)
    edge_artists = {e: _draw_edge(ax, e, pos, id(e) in marked, rads[id(e)], edge_labels) for e in edges}
    notes = _by_node(annotations or {}, out)
    node_artists = {}
    for node in engine.topological_order(out):
        x, y = pos[id(node)]
        node_artists[node] = ax.text(x, y, node_label(node), ha="center", va="center", fontsize=13, zorder=3,
                                     bbox=dict(boxstyle="round,pad=0.35", fc="white", ec="0.3"))
        if id(node) in notes:
            ax.text(x, y - 0.32, notes[id(node)], ha="center", va="top", fontsize=9, color="tab:blue")
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.7)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return GraphDrawing(fig, ax, pos, node_artists, edge_artists)


def _by_node(annotations, out):
    """Key annotations by node id, accepting node names too."""
    names = {n.name: n for n in engine.topological_order(out) if n.name}
    return {id(names[k] if isinstance(k, str) else k): v for k, v in annotations.items()}


def _draw_edge(ax, edge, pos, marked, rad, with_label):
    """One arrow; red and thick when highlighted."""
    (x0, y0), (x1, y1) = pos[id(edge.src)], pos[id(edge.dst)]
    color = HIGHLIGHT if marked else PLAIN
    arrow = FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                            mutation_scale=14, color=color, lw=2.6 if marked else 1.2,
                            shrinkA=16, shrinkB=16, zorder=2)
    ax.add_patch(arrow)
    if with_label:
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2 + rad * 0.5
        ax.text(mx, my, edge.local, fontsize=8, color=color, ha="center", va="bottom", zorder=4)
    return arrow


def draw_jacobian(J, ax=None, title=None, annotate=None):
    """Heatmap of a Jacobian, zero in white; small ones carry their values."""
    J = np.asarray(J, dtype=float)
    if J.ndim != 2:
        raise ValueError(f"draw_jacobian needs a 2-D matrix; got shape {J.shape}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 3.6))
    lim = max(float(np.abs(J).max()), 1e-12)
    image = ax.imshow(J, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(image, ax=ax, shrink=0.8)
    if annotate if annotate is not None else J.size <= 64:
        for (i, j), v in np.ndenumerate(J):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("input index j")
    ax.set_ylabel("output index i")
    if title:
        ax.set_title(title)
    return fig, ax, image
