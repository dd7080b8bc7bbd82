"""The install cell: a chapter opened on its own installs bnbackprop from the book's repository.

Every committed chapter's first code cell is this cell (tests/test_launch_setting.py checks it).
When `import bnbackprop` works, as in the book's own environment, it does nothing and shows
nothing (nbval runs it and finds no output). When it would fail (Colab, a lone downloaded .ipynb)
it pip-installs bnbackprop with the extras the chapters use from $BNBACKPROP_REPO_URL, else from the
URL written into the cell; with neither, it raises one ImportError that says how to install. The
variable comes first so that a fork, or the lone-chapter test's `git+file://` repository, can
point a chapter elsewhere without editing it. The HTML book hides the cell (tag `remove-cell`).

Where the URL gets written in:
- the .ipynb downloads of the HTML book: tools/build.py writes the build's URL into them;
- the committed chapters (Colab opens the repository's own copy): once the book has its public
  URL, run `python tools/bootstrap.py --url URL` and commit. Nothing needs re-running:
  tools/run_notebooks.py never executes this cell (it would do nothing there), so no other cell's
  execution count depends on it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

TAG = "bootstrap"
HIDE = "remove-cell"
ENV = "BNBACKPROP_REPO_URL"  # the same setting as tools/repository.py's
# What the chapters import, without the tools that only build the book ([book] adds JupyterLab,
# Jupyter Book and Sphinx, which Colab has no use for and which would replace its own Jupyter).
EXTRAS = "widgets,fast,symbolic,lowprec,mpi"
TEMPLATE = '''\
# Opened on its own (Colab, a downloaded .ipynb) without bnbackprop? Then install it from the book's repository.
import importlib.util

if importlib.util.find_spec("bnbackprop") is None:
    import importlib
    import os
    import subprocess
    import sys

    PACKAGE = "bnbackprop[{extras}]"
    REPOSITORY = os.environ.get("{env}") or "{url}"
    if not REPOSITORY:
        raise ImportError("bnbackprop is not installed: set {env} to the book's git URL and re-run this cell, "
                          f"or pip install '{{PACKAGE}} @ git+URL'")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{{PACKAGE}} @ git+{{REPOSITORY}}"], check=True)
    importlib.invalidate_caches()  # so that the next cell's import sees the new package'''
WRITTEN_URL = re.compile(r'^    REPOSITORY = os\.environ\.get\("\w+"\) or "(?P<url>[^"\n]*)"$', re.M)


def bootstrap_source(url: str = "") -> str:
    """The cell's code, with `url` as the repository URL written into it ('' for none)."""
    if '"' in url or "\\" in url or "\n" in url:
        raise ValueError(f"url must be a plain URL without quotes, backslashes or newlines; got {url!r}")
    return TEMPLATE.format(env=ENV, url=url, extras=EXTRAS)


def written_url(source: str) -> str | None:
    """The URL written into an install cell's code ('' for none), or None if it is not such code."""
    m = WRITTEN_URL.search(source)
    return m["url"] if m else None


def is_bootstrap(cell) -> bool:
    """Whether a cell is the bootstrap cell."""
    return cell.get("cell_type") == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def with_bootstrap(nb, url: str = ""):
    """`nb` with exactly one bootstrap cell, never run, right before its first code cell."""
    cells = [c for c in nb.cells if not is_bootstrap(c)]
    first_code = next((i for i, c in enumerate(cells) if c.cell_type == "code"), len(cells))
    cell = nbformat.v4.new_code_cell(bootstrap_source(url), metadata={"tags": [TAG, HIDE]})
    cell["id"] = TAG  # ids are unique within a notebook; a fixed one keeps re-runs of this tool quiet
    nb.cells = cells[:first_code] + [cell] + cells[first_code:]
    return nb


def add_install_cell(path: Path, url: str) -> None:
    """Give a notebook file its install cell with `url`, in place (its other cells keep their outputs)."""
    nbformat.write(with_bootstrap(nbformat.read(path, as_version=4), url), path)


def main(argv: list[str]) -> int:
    """`[--url URL] [NOTEBOOK ...]`: give each notebook (default: every chapter under book/) its install cell."""
    url = argv[argv.index("--url") + 1] if "--url" in argv else ""
    names = [a for i, a in enumerate(argv) if a != "--url" and (i == 0 or argv[i - 1] != "--url")]
    root = Path(__file__).resolve().parents[1]
    for path in [Path(a) for a in names] or sorted((root / "book").glob("*.ipynb")):
        add_install_cell(path, url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
