"""The book as a whole: every listed notebook was run top to bottom, and the strict build passes."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

from helpers import ROOT
from tools import toc
from tools.bootstrap import is_bootstrap
from tools.build import build_book


def toc_files() -> list[str]:
    """Every file named in _toc.yml, root first."""
    return toc.toc_files(ROOT)


def toc_notebooks() -> list[Path]:
    """The notebooks among the _toc.yml entries."""
    return [ROOT / f"{f}.ipynb" for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


def test_every_toc_entry_exists():
    missing = [f for f in toc_files() if not any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb"))]
    assert missing == []


def test_every_notebook_under_book_is_in_the_toc():
    listed = set(toc_notebooks())
    on_disk = {p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts}
    assert on_disk - listed == set()


@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.name)
def test_notebook_was_run_top_to_bottom(path):
    """nbval passes unexecuted cells silently; this catches them, and out-of-order runs too.
    The install cell is never run when outputs are stored (tools/run_notebooks.py), only by nbval."""
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if c.cell_type == "code" and c.source.strip() and not is_bootstrap(c)]
    counts = [c.execution_count for c in cells]
    assert None not in counts, f"{path.name}: cells {[i for i, n in enumerate(counts) if n is None]} never ran"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: not run top to bottom in one fresh kernel"
    assert any(c.outputs for c in cells), f"{path.name}: no stored outputs at all"
    errors = [c for c in cells for o in c.outputs if o.output_type == "error" and "raises-exception" not in c.metadata.get("tags", [])]
    assert errors == [], f"{path.name}: stored error outputs in cells not tagged raises-exception"


def test_book_builds_with_warnings_as_errors():
    proc = build_book(ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    html = ROOT / "_build" / "html"
    assert (html / "index.html").exists()
    assert not (html / "reports").exists(), "execution reports must not be published"


def plain_heading(text: str) -> str:
    """A heading as a report prints it: no $, backticks or TeX commands for the few symbols used."""
    for tex, char in ((r"\gamma", "γ"), (r"\partial ", "∂"), (r"\partial", "∂"), (r"\mu", "μ"), ("$", ""), ("`", "")):
        text = text.replace(tex, char)
    return text.lstrip("# ").strip()


def test_every_bug_points_at_a_real_section():
    """The grader's 'Read: Chapter N, <section>' must lead somewhere that exists."""
    import re

    from bnbackprop.grader.bugs import BUGS

    for bug in BUGS.values():
        chapter, section = re.fullmatch(r"Chapter (\d+), '(.+)'", bug.section).groups()
        (path,) = (ROOT / "book").glob(f"{int(chapter):02d}_*.ipynb")
        headings = [plain_heading(line) for cell in nbformat.read(path, as_version=4).cells
                    if cell.cell_type == "markdown" for line in cell.source.splitlines() if line.startswith("## ")]
        assert section in headings, (bug.name, path.name, headings)


CHAPTERS = [p for p in toc_notebooks() if p.stem != "notation"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_shape(path):
    """Title and overview, imports first, two or more exercises with hidden solutions, cited figures."""
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    first_code = next(c for c in cells if c.cell_type == "code" and not is_bootstrap(c))
    assert "import" in first_code.source, f"{path.name}: the first code cell should hold the imports"
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    exercises = text.count("{admonition} Exercise")
    assert exercises >= 2 and text.count("{dropdown} Solution") >= exercises
    solutions = [c for c in cells if c.cell_type == "code" and "hide-cell" in c.metadata.get("tags", [])]
    assert len(solutions) >= exercises
    figures = [c.metadata["mystnb"]["figure"] for c in cells if c.metadata.get("mystnb", {}).get("figure")]
    assert figures, f"{path.name}: no captioned figure"
    for fig in figures:
        assert fig.get("caption") and fig.get("name"), fig
        assert f"`{fig['name']}`" in text, f"{path.name}: figure {fig['name']} is never referenced"


def library_imports(path: Path) -> list[tuple[int, ast.stmt]]:
    """(code cell index, statement) for every import in the notebook that names bnbackprop."""
    found = []
    code_cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and not is_bootstrap(c)]
    for i, cell in enumerate(code_cells):
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import) and any(a.name.partition(".")[0] == "bnbackprop" for a in node.names):
                found.append((i, node))
            if isinstance(node, ast.ImportFrom) and (node.module or "").partition(".")[0] == "bnbackprop":
                found.append((i, node))
    return found


@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.name)
def test_chapter_imports_the_library_in_one_style(path):
    """`from bnbackprop.<module> import name, ...` in the imports cell, public names only, no sys.path."""
    imports = library_imports(path)
    assert imports, f"{path.name}: imports nothing from bnbackprop"
    for cell, node in imports:
        text = ast.unparse(node)
        assert cell == 0, f"{path.name}: `{text}` outside the imports cell"
        assert isinstance(node, ast.ImportFrom) and node.level == 0, f"{path.name}: `{text}`; write from bnbackprop.<module> import names"
        assert node.module != "bnbackprop", f"{path.name}: `{text}`; name the module: from bnbackprop.<module> import ..."
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert alias.asname is None, f"{path.name}: `{text}` renames {alias.name}"
            assert not isinstance(getattr(module, alias.name, None), ModuleType), f"{path.name}: `{text}` imports a module"
            assert alias.name in module.__all__, f"{path.name}: `{text}`: {alias.name} is not in {node.module}.__all__"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "sys.path" not in code, f"{path.name}: chapters never touch sys.path"
