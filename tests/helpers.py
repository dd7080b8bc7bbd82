"""Helpers shared by the test modules (import them with `from helpers import ...`; conftest.py is for pytest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: _config.yml, _toc.yml, book/, tools/


def run_cli(tmp_path, source, target, *args, timeout=120):
    """Write source to a file and run the grader's CLI on it in a fresh interpreter."""
    path = tmp_path / "student.py"
    path.write_text(textwrap.dedent(source))
    cmd = [sys.executable, "-m", "bnbackprop.grader", f"{path}:{target}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
