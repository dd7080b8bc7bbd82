"""Build the HTML book with warnings as errors: `python -m bnbackprop.build`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def project_root(start: Path | None = None) -> Path:
    """The folder holding _config.yml: the current one or a parent of it."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").exists() and (folder / "_toc.yml").exists():
            return folder
    raise ValueError(f"no _config.yml and _toc.yml in {here} or its parents; run this from the book's folder")


def build_book(root: Path | None = None) -> subprocess.CompletedProcess:
    """Run `jupyter-book build -W -n --keep-going` and drop any execution reports from the site."""
    root = project_root(root)
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe), "build", str(root), "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    shutil.rmtree(root / "_build" / "html" / "reports", ignore_errors=True)
    return proc


def main() -> int:
    """Build, echo the log, and return the build's exit code."""
    proc = build_book()
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
