"""The install cell: a chapter opened on its own installs bnbackprop from the book's repository.

When `import bnbackprop` would fail (Colab, a lone downloaded .ipynb) the cell pip-installs
`bnbackprop[book]` from $BNBACKPROP_REPO_URL, else from the URL written into it; when the import
works it does nothing and shows nothing. The HTML book hides it (tag `remove-cell`).

Where it goes:
- the .ipynb downloads of the HTML book: tools/build.py adds it, with the URL of the build;
- the committed chapters, for Colab (which opens the repository's own copy): run
  `python tools/bootstrap.py --url URL`, then `make notebooks` (every chapter re-runs, since the
  cell shifts every execution count), and commit. Done once the book has its public URL.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

TAG = "bootstrap"
HIDE = "remove-cell"
TEMPLATE = '''\
# Opened on its own (Colab, a downloaded .ipynb)? Then install the book's package from its repository.
import importlib.util

if importlib.util.find_spec("bnbackprop") is None:
    import os
    import subprocess
    import sys

    url = os.environ.get("BNBACKPROP_REPO_URL") or "{url}"
    if not url:
        raise ModuleNotFoundError("bnbackprop is not installed: set BNBACKPROP_REPO_URL to the book's repository, "
                                  "or pip install 'bnbackprop[book] @ git+URL'")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"bnbackprop[book] @ git+{{url}}"], check=True)'''


def bootstrap_source(url: str = "") -> str:
    """The cell's code, with `url` as the fallback repository URL."""
    if '"' in url or "\n" in url:
        raise ValueError(f"url must be a plain URL without quotes or newlines; got {url!r}")
    return TEMPLATE.format(url=url)


def is_bootstrap(cell) -> bool:
    """Whether a cell is the bootstrap cell."""
    return cell.get("cell_type") == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def with_bootstrap(nb, url: str = ""):
    """`nb` with exactly one bootstrap cell, right before its first code cell."""
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
