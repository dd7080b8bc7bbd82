"""The first code cell of every chapter: install bnbackprop when a chapter is opened on its own.

In the checkout (`make lab`, `make test`) the import works and the cell does nothing. In Colab or
a lone downloaded .ipynb it pip-installs `bnbackprop[book]` from the book's repository URL:
$BNBACKPROP_REPO_URL, else the URL written into the cell. The committed chapters carry no URL;
the build writes the one it has (tools/repository.py) into the copies the HTML book offers for
download, and `python tools/bootstrap.py` (re)writes the cell into every chapter.

The HTML book hides the cell (tag `remove-cell`): it is set-up, not content.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

TAG = "bootstrap"
HIDE = "remove-cell"
URL_LINE = re.compile(r'^(    url = os\.environ\.get\("BNBACKPROP_REPO_URL"\) or )"[^"\n]*"$', re.M)
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


def stamp_url(path: Path, url: str) -> None:
    """Write `url` into the bootstrap cell of a notebook file, in place, keeping everything else as it is."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if is_bootstrap(cell):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = URL_LINE.sub(lambda m: f'{m[1]}"{url}"', source)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    """Give each notebook named (default: every chapter under book/) its bootstrap cell."""
    root = Path(__file__).resolve().parents[1]
    paths = [Path(a) for a in argv] or sorted((root / "book").glob("*.ipynb"))
    for path in paths:
        nbformat.write(with_bootstrap(nbformat.read(path, as_version=4)), path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
