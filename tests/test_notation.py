"""One meaning per symbol: the letters the name table gives a single meaning are not reused in the chapters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bnbackprop.names import NAME_TABLE, SYMBOLS

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("*.ipynb"))


def texts(path: Path) -> dict[str, list[str]]:
    """The markdown (with figure captions) and the code of one notebook, cell by cell."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {"markdown": [], "code": []}
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        caption = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption", "")
        if cell["cell_type"] == "markdown":
            out["markdown"].append(source)
        elif cell["cell_type"] == "code":
            out["code"].append(source)
        if caption:
            out["markdown"].append(caption)
    return out


# (what it catches, where, pattern): each is a second meaning of a letter the table gives one meaning.
REUSED = [
    ("W as image width in a shape (W is the weights)", "markdown", r"\(N,\s*C,\s*H,\s*W\)|\$[^$]*\b[NC]?HW\b"),
    ("W as image width in code", "code", r"\bN,\s*C,\s*H,\s*W\s*=|\(C,\s*H,\s*W\)"),
    ("G as the graph (G is GroupNorm's group count)", "code", r"^\s*G\w*\s*=\s*batchnorm_graph"),
    ("n or m for a count or a mean in Chan's or Welford's update (B and mu are the table's)", "markdown",
     r"\bn_\{?[kab]\}?|\bm_\{?[ab]\}?\b|\bm_\{?n"),
    ("g for the gradient at xbar (that is v; g is gamma * dy)", "markdown", r"upstream \$g\$|random \$g\$|type \$g\$"),
    ("std for sqrt(var + eps) in code (the table's s; it is the standard deviation only at eps = 0)", "code",
     r"\bstd\b"),
    ("the penalty written with P (P is the backward's projection)", "markdown", r"\\mathcal\{P\}"),
]


@pytest.mark.parametrize("what, kind, pattern", REUSED, ids=[r[0].split(" (")[0] for r in REUSED])
def test_no_chapter_gives_a_table_letter_a_second_meaning(what, kind, pattern):
    found = [f"{path.name}: {m.group(0)!r}" for path in CHAPTERS for text in texts(path)[kind]
             for m in re.finditer(pattern, text, re.M)]
    assert not found, f"{what}: {found}"


def test_the_table_gives_each_symbol_one_row_and_names_the_letters_it_reserves():
    symbols = [row.symbol for row in NAME_TABLE]
    assert len(symbols) == len(set(symbols))
    meaning = {row.code: row.meaning for row in NAME_TABLE}
    assert "weights" in meaning["W"] and "width" not in meaning["W"] and "axis" not in meaning["W"]
    assert "groups of GroupNorm" in meaning["G"] and "graph has no letter" in meaning["G"]
    assert "B_k" in meaning["B"] and "device" in meaning["K"]
    assert SYMBOLS["S"] == "S" and "height times width" in meaning["S"]


def test_the_patterns_catch_what_they_forbid():
    """Each pattern finds the old wording it replaced, so a clean result above is not vacuous."""
    old = {
        REUSED[0][2]: "For an image batch of shape $(N, C, H, W) = (2, 3, 2, 2)$ and $B = NHW$",
        REUSED[1][2]: "N, C, H, W = 4, 6, 3, 5",
        REUSED[2][2]: "G = batchnorm_graph(x, gamma, beta)",
        REUSED[3][2]: r"$\mu = \mu_a + \delta\,\frac{n_b}{n}$ and $m_{n-1}$",
        REUSED[4][2]: "for a random $g$: the direct path sends",
        REUSED[5][2]: "    std = np.sqrt(var + eps)",
        REUSED[6][2]: r"$\mathcal{P} = \tfrac{1}{2}\|\partial\ell/\partial X\|^2$",
    }
    for pattern, text in old.items():
        assert re.search(pattern, text, re.M), pattern
