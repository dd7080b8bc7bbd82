"""Re-run the book's notebooks top to bottom and store outputs and widget state: `python tools/run_notebooks.py [book/XX.ipynb ...]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]  # the checkout: this file lives in its tools/
if str(ROOT) not in sys.path:  # run as a script, `python tools/run_notebooks.py`
    sys.path.insert(0, str(ROOT))

from tools.bootstrap import is_bootstrap  # noqa: E402


def notebooks(root: Path) -> list[Path]:
    """Every notebook under book/, skipping checkpoints."""
    return sorted(p for p in (root / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def run_notebook(path: Path, timeout: int = 600) -> None:
    """Execute one notebook in a fresh kernel, without timing metadata, keeping widget state."""
    nb = nbformat.read(path, as_version=4)
    # The stored widget state is what the HTML book shows without a kernel: explorers draw every
    # figure of their grid in advance (bnbackprop.widgets.base). The kernel inherits this variable.
    os.environ["BNBACKPROP_STATIC_WIDGETS"] = "1"
    # The install cell is not run: here bnbackprop imports, so it would do nothing (nbval runs it and
    # checks that), and leaving it out keeps every other cell's execution count independent of it.
    # So writing a URL into it (tools/bootstrap.py) needs no re-run of the chapter.
    install = [(i, c) for i, c in enumerate(nb.cells) if is_bootstrap(c)]
    nb.cells = [c for c in nb.cells if not is_bootstrap(c)]
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    for i, cell in install:
        cell.outputs, cell.execution_count = [], None
        nb.cells.insert(i, cell)
    nbformat.write(nb, path)


def coalesce_streams(outputs: list) -> list:
    """Join consecutive stdout (or stderr) chunks: how the kernel happened to flush is not content."""
    merged = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if out.output_type == "stream" and prev is not None and prev.output_type == "stream" and prev.name == out.name:
            prev.text += out.text
        else:
            merged.append(out)
    return merged


def main(argv: list[str]) -> int:
    """Run the notebooks named on the command line, or all of them."""
    paths = [Path(a).resolve() for a in argv] or notebooks(ROOT)
    for path in paths:
        print(f"running {path.relative_to(ROOT)}", flush=True)
        run_notebook(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
