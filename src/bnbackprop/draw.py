"""Drawing engine graphs and Jacobians with matplotlib alone (no Graphviz).

The graph layout is a small layered (Sugiyama-style) layout, left to right: nodes go in columns by
longest path, an edge that skips columns is routed through invisible waypoints so that it never
crosses a node, the order inside a column follows the neighbours (barycenters). The path with
fewest steps from the leftmost input to the output is the straight main row; every other node sits
as close to its neighbours' mean height as a minimum gap allows (isotonic regression). Columns are
then spaced in inches so that node boxes and edge labels, measured with the renderer, fit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path
from matplotlib.ticker import FixedLocator, MaxNLocator

from . import engine
from .names import SYMBOLS, symbol

HIGHLIGHT = "tab:red"
PLAIN = "0.45"
NODE_GAP = 1.0  # vertical gap between two nodes of one column
WAY_GAP = 0.7  # vertical gap next to a waypoint of a long edge
ROW_INCH = 0.75  # height of one row of the layout
MIN_GAP_INCH = 0.5  # free space between the boxes of neighbouring columns


@dataclass
class GraphDrawing:
    """The figure of a drawn graph and the artists for each node and edge."""

    fig: plt.Figure
    ax: plt.Axes
    positions: dict  # id(node) -> (x, y) in data units (inches on a figure draw_graph made)
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


def _segments(out, layer):
    """Split every edge into one-column steps; waypoints are keyed ('way', edge id, column)."""
    chains, columns = {}, defaultdict(list)
    for node in engine.topological_order(out):
        columns[layer[id(node)]].append(id(node))
    for e in engine.all_edges(out):
        a, b = layer[id(e.src)], layer[id(e.dst)]
        ways = [("way", id(e), c) for c in range(a + 1, b)]
        for w in ways:
            columns[w[2]].append(w)
        chains[id(e)] = [id(e.src), *ways, id(e.dst)]
    return chains, columns


def _neighbours(chains):
    """Left and right neighbours of every node and waypoint, one entry per edge step."""
    left, right = defaultdict(list), defaultdict(list)
    for chain in chains.values():
        for u, v in zip(chain, chain[1:]):
            right[u].append(v)
            left[v].append(u)
    return left, right


def _order_columns(columns, left, right, sweeps=4):
    """Order each column by the mean rank of its neighbours, sweeping right then left."""
    rank = {k: i for col in columns.values() for i, k in enumerate(col)}
    keys = sorted(columns)
    for s in range(sweeps):
        side, seq = (left, keys[1:]) if s % 2 == 0 else (right, keys[-2::-1])
        for c in seq:
            col = columns[c]
            bary = {k: np.mean([rank[n] for n in side[k]]) if side[k] else rank[k] for k in col}
            col.sort(key=lambda k: (bary[k], rank[k]))
            rank.update({k: i for i, k in enumerate(col)})
    return columns


def _isotonic_decreasing(u, w):
    """Weighted least-squares fit of a non-increasing sequence to u (pool adjacent violators)."""
    blocks = []
    for v, wv in zip(u, w):
        blocks.append([v * wv, wv, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, ws, n = blocks.pop()
            blocks[-1] = [blocks[-1][0] + s, blocks[-1][1] + ws, blocks[-1][2] + n]
    return [s / ws for s, ws, n in blocks for _ in range(n)]


def _spine(out, chains, layer):
    """Keys of the path with fewest steps from the leftmost input to `out`: the straight main row."""
    order = engine.topological_order(out)
    start = min((n for n in order if not n.edges), key=lambda n: layer[id(n)], default=out)
    best = {id(start): (0, None)}
    for node in order:
        for e in node.edges:
            if id(e.src) in best and (id(node) not in best or best[id(e.src)][0] + 1 < best[id(node)][0]):
                best[id(node)] = (best[id(e.src)][0] + 1, e)
    keys, node = {id(out)}, out
    while best.get(id(node), (0, None))[1] is not None:
        edge = best[id(node)][1]
        keys.update(chains[id(edge)])
        node = edge.src
    return keys


def _heights(columns, left, right, pinned, rounds=30):
    """Rows: the spine stays at 0, every other key as close to its neighbours as the gaps allow."""
    y = {k: 0.0 if k in pinned else -float(i) for col in columns.values() for i, k in enumerate(col)}
    for _ in range(rounds):
        for c in sorted(columns):
            col = columns[c]
            want = [0.0 if k in pinned else _pull(left[k] + right[k], y, y[k]) for k in col]
            gaps = [0.0] + [NODE_GAP if isinstance(a, int) and isinstance(b, int) else WAY_GAP
                            for a, b in zip(col, col[1:])]
            offset = np.cumsum(gaps)
            weight = [1e9 if k in pinned else 1.0 for k in col]
            fitted = _isotonic_decreasing([w + o for w, o in zip(want, offset)], weight)
            y.update({k: f - o for k, f, o in zip(col, fitted, offset)})
    return y


def _pull(neighbours, y, default):
    """Mean height of a key's neighbours (its own height if it has none)."""
    return float(np.mean([y[n] for n in neighbours])) if neighbours else default


def _full_layout(out):
    """Column and row of every node and waypoint, plus each edge's chain of keys."""
    layer = layers(out)
    chains, columns = _segments(out, layer)
    left, right = _neighbours(chains)
    columns = _order_columns(columns, left, right)
    y = _heights(columns, left, right, _spine(out, chains, layer))
    return {k: (float(c), round(y[k], 4) + 0.0) for c, col in columns.items() for k in col}, chains


def layout(out: engine.Node) -> dict[int, tuple[float, float]]:
    """(x, y) position of each node (by id): x by layer, y fitted to the neighbours; the output is at y = 0."""
    pos, _ = _full_layout(out)
    return {k: v for k, v in pos.items() if isinstance(k, int)}


def node_label(node: engine.Node) -> str:
    """The math symbol for a named node, the op for an unnamed one."""
    return f"${symbol(node.name)}$" if node.name else node.op


_TOKEN = re.compile(r"[A-Za-z_]+")


def edge_label(edge: engine.Edge) -> str:
    """The edge's local derivative as mathtext, with code names replaced by their symbols."""
    text = edge.local
    names = [t for t in _TOKEN.findall(text) if t in SYMBOLS]
    if not names and not re.search(r"\^", text):
        return text
    text = re.sub(r"\^1(?![0-9.])", "", text)
    text = re.sub(r"\^(-?[0-9.]+)", r"^{\1}", text)
    text = _TOKEN.sub(lambda m: _symbol_group(m.group(0), text, m.end()), text)
    return "$" + text.replace(" ", r"\,") + "$"


def _symbol_group(name, text, end):
    """A symbol, in parentheses when a power follows and the symbol is compound."""
    sym = SYMBOLS.get(name, name)
    compound = any(c in sym for c in "+^") or len(sym) > 8
    return f"({sym})" if compound and text[end:end + 1] == "^" else sym


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
    grid, chains = _full_layout(out)
    nodes, edges = engine.topological_order(out), engine.all_edges(out)
    own = ax is None
    fig, ax = plt.subplots() if own else (ax.figure, ax)
    ax.set_axis_off()
    node_artists = {n: _draw_node(ax, n) for n in nodes}
    labels = {id(e): _label_artist(ax, e) for e in edges} if edge_labels else {}
    full = _place(fig, grid, chains, node_artists, labels)
    pos = {id(n): full[id(n)] for n in nodes}
    for n, text in node_artists.items():
        text.set_position(pos[id(n)])
    _frame(fig, ax, full, own, title)
    half = _half_sizes(fig, ax, node_artists)
    marked, rads = {id(e) for e in highlight}, _edge_rads(edges)
    edge_artists = {e: _draw_edge(ax, e, [full[k] for k in chains[id(e)]], half, id(e) in marked,
                                  rads[id(e)], labels.get(id(e))) for e in edges}
    notes = _by_node(annotations or {}, out)
    for node in nodes:
        if id(node) in notes:
            x, y = pos[id(node)]
            ax.text(x, y - half[id(node)][1] - 0.04, notes[id(node)], ha="center", va="top", fontsize=9,
                    color="tab:blue", zorder=5)
    return GraphDrawing(fig, ax, pos, node_artists, edge_artists)


def _inches(fig, artist):
    """Width of an artist's drawn extent, in inches."""
    return artist.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi


def _place(fig, grid, chains, node_artists, labels):
    """Positions in inches: columns spaced so boxes and edge labels fit, rows ROW_INCH apart."""
    col_half = defaultdict(float)
    for node, text in node_artists.items():
        c = grid[id(node)][0]
        col_half[c] = max(col_half[c], _inches(fig, text) / 2 + 0.08)
    step_label = defaultdict(float)
    for key, text in labels.items():
        chain = chains[key]
        c = grid[chain[(len(chain) - 1) // 2]][0]
        step_label[c] = max(step_label[c], _inches(fig, text) + 0.3)
    cols = sorted({c for c, _ in grid.values()})
    x = {cols[0]: 0.0}
    for a, b in zip(cols, cols[1:]):
        x[b] = x[a] + col_half[a] + col_half[b] + max(MIN_GAP_INCH, step_label[a])
    return {k: (x[c], r * ROW_INCH) for k, (c, r) in grid.items()}


def _frame(fig, ax, full, own, title):
    """Axis limits around the layout; a figure of our own gets 1 data unit = 1 inch."""
    xs, ys = zip(*full.values())
    x0, x1, y0, y1 = min(xs) - 0.45, max(xs) + 0.45, min(ys) - 0.5, max(ys) + 0.45
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if title:
        ax.set_title(title)
    if own:
        top = 0.35 if title else 0.0
        fig.set_size_inches(x1 - x0, y1 - y0 + top)
        ax.set_position([0, 0, 1, (y1 - y0) / (y1 - y0 + top)])


def _label_artist(ax, edge):
    """An edge's label text, placed later."""
    return ax.text(0, 0, edge_label(edge), fontsize=9, ha="center", va="center", zorder=4,
                   bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.9))


def _draw_node(ax, node):
    """A node's label in a rounded box, placed later; inputs get a shaded box."""
    face = "0.93" if not node.edges else "white"
    return ax.text(0, 0, node_label(node), ha="center", va="center", fontsize=13, zorder=3,
                   bbox=dict(boxstyle="round,pad=0.3", fc=face, ec="0.3"))


def _half_sizes(fig, ax, node_artists):
    """Half width and height of each node's box in data units, measured with the renderer."""
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    half = {}
    for node, text in node_artists.items():
        box = text.get_window_extent(renderer).padded(6 * fig.dpi / 72)
        (x0, y0), (x1, y1) = to_data.transform([(box.x0, box.y0), (box.x1, box.y1)])
        half[id(node)] = (abs(x1 - x0) / 2, abs(y1 - y0) / 2)
    return half


def _route(points, src_half, dst_half, rad):
    """A smooth left-to-right path from the right side of the source box to the left side of the target."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    bend = rad * 0.45  # parallel edges leave and enter at different heights and bow apart
    pts = [(x0 + src_half[0], y0 + bend * 0.5), *points[1:-1], (x1 - dst_half[0], y1 + bend * 0.5)]
    if len(pts) == 2:
        (a, b), (c, d) = pts
        pts = [pts[0], ((a + c) / 2, (b + d) / 2 + bend), pts[1]] if bend else pts
    verts, codes = [pts[0]], [Path.MOVETO]
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        mid = (xb - xa) / 2
        verts += [(xa + mid, ya), (xb - mid, yb), (xb, yb)]
        codes += [Path.CURVE4] * 3
    return Path(verts, codes), pts


def _draw_edge(ax, edge, points, half, marked, rad, label):
    """One arrow through its waypoints, red and thick when highlighted; its label goes mid-way."""
    color = HIGHLIGHT if marked else PLAIN
    path, pts = _route(points, half[id(edge.src)], half[id(edge.dst)], rad)
    arrow = FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=14, color=color,
                            lw=2.6 if marked else 1.2, zorder=2)
    ax.add_patch(arrow)
    if label is not None:
        _place_label(label, pts, rad, color)
    return arrow


def _place_label(label, pts, rad, color):
    """Above the middle of a flat route (below for the lower of two parallel edges); beside a steep one."""
    if len(pts) % 2:
        x, y = pts[len(pts) // 2]
        steep = False
    else:
        k = (len(pts) - 1) // 2
        (xa, ya), (xb, yb) = pts[k], pts[k + 1]
        x, y = (xa + xb) / 2, (ya + yb) / 2
        steep = abs(yb - ya) > 0.5 * abs(xb - xa)
    if steep:  # the curve is nearly vertical mid-way: a label on it would hide it
        label.set_position((x + 0.07, y))
        label.set_horizontalalignment("left")
    else:
        below = rad < 0
        label.set_position((x, y + (-0.05 if below else 0.05)))
        label.set_verticalalignment("top" if below else "bottom")
    label.set_color(color)


def _by_node(annotations, out):
    """Key annotations by node id, accepting node names too."""
    names = {n.name: n for n in engine.topological_order(out) if n.name}
    return {id(names[k] if isinstance(k, str) else k): v for k, v in annotations.items()}


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
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(v) > 0.6 * lim else "black")  # stay legible on dark cells
    for axis, n in ((ax.xaxis, J.shape[1]), (ax.yaxis, J.shape[0])):
        # indices: every one when few, else whole numbers only (never 0.5)
        axis.set_major_locator(FixedLocator(range(n)) if n <= 16 else MaxNLocator(integer=True))
    ax.set_xlabel("input index j")
    ax.set_ylabel("output index i")
    if title:
        ax.set_title(title)
    return fig, ax, image


__all__ = ["GraphDrawing", "HIGHLIGHT", "PLAIN", "draw_graph", "draw_jacobian", "edge_label", "layers", "layout", "node_label"]
