"""Re-run the book's notebooks top to bottom and store outputs and widget state: `python -m bnbackprop.run_notebooks`."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .build import project_root


def notebooks(root: Path) -> list[Path]:
    """Every notebook under book/, skipping checkpoints."""
    return sorted(p for p in (root / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def run_notebook(path: Path, timeout: int = 600) -> None:
    """Execute one notebook in a fresh kernel, without timing metadata, keeping widget state."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    """Run the notebooks named on the command line, or all of them."""
    root = project_root()
    paths = [Path(a).resolve() for a in argv] or notebooks(root)
    for path in paths:
        print(f"running {path.relative_to(root)}", flush=True)
        run_notebook(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
