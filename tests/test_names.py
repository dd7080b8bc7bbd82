"""One name table: every node of the batch norm graph, and every symbol drawn, comes from it."""

from __future__ import annotations

import numpy as np
import pytest

import bnbackprop as bn
from bnbackprop import engine
from bnbackprop.names import NAME_TABLE, SYMBOLS, markdown_table, symbol


def test_every_graph_node_is_in_the_name_table():
    rng = np.random.default_rng(51)
    graph = bn.batchnorm_graph(rng.normal(size=(4, 2)), rng.normal(size=2), rng.normal(size=2))
    names = {n.name for n in engine.topological_order(graph.y)}
    assert names <= set(SYMBOLS), names - set(SYMBOLS)
    assert set(graph.nodes) == names


def test_code_names_are_unique_and_the_table_renders():
    codes = [row.code for row in NAME_TABLE]
    assert len(codes) == len(set(codes))
    table = markdown_table()
    assert table.count("\n") == len(NAME_TABLE) + 1
    assert "| $\\hat{x}$ | normalized input, xmu / s | `xhat` |" in table


def test_gradient_names_map_to_partial_derivatives():
    assert symbol("xhat") == r"\hat{x}"
    assert symbol("dxhat") == r"\partial L/\partial \hat{x}"
    assert symbol("dx") == SYMBOLS["dx"]  # dx has its own row
    assert symbol("unknown") == "unknown"


def test_a_subset_of_the_table_renders_in_table_order():
    table = markdown_table(["ddy", "ddx"])
    assert table.splitlines()[2:] == [markdown_table().splitlines()[2 + i] for i, row in enumerate(NAME_TABLE)
                                      if row.code in ("ddx", "ddy")]
    with pytest.raises(ValueError, match="unknown"):
        markdown_table(["nope"])
