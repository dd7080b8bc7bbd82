"""Build the HTML book with warnings as errors: `python tools/build.py`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: this file lives in its tools/


def build_book(root: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `jupyter-book build -W -n --keep-going` and drop any execution reports from the site."""
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
