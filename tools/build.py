"""Build the HTML book with warnings as errors: `python tools/build.py`.

The repository URL comes from one setting (tools/repository.py): with it, the book has repository
and launch buttons, and its .ipynb downloads start with a cell that installs bnbackprop from it
when the chapter is opened on its own (tools/bootstrap.py);
without it, those buttons are left out and the build says, in one line, how to turn them on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: this file lives in its tools/
if str(ROOT) not in sys.path:  # run as a script, `python tools/build.py`
    sys.path.insert(0, str(ROOT))

from tools.bootstrap import add_install_cell  # noqa: E402
from tools.repository import HOW_TO_ENABLE, generated_config  # noqa: E402


def build_book(root: Path = ROOT, environ=os.environ) -> subprocess.CompletedProcess:
    """Run `jupyter-book build -W -n --keep-going` with the URL's config; tidy the site; note a missing URL."""
    config, url = generated_config(root, environ)
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe), "build", str(root), "-W", "-n", "--keep-going", "--config", str(config)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    site = root / "_build" / "html"
    shutil.rmtree(site / "reports", ignore_errors=True)
    for notebook in (site / "_sources").rglob("*.ipynb") if url else ():
        add_install_cell(notebook, url)  # a downloaded chapter installs bnbackprop from this repository
    if not url:
        proc.stdout += HOW_TO_ENABLE + "\n"
    return proc


def main() -> int:
    """Build, echo the log, and return the build's exit code."""
    proc = build_book()
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
