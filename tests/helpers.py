"""Helpers shared by the test modules (import them with `from helpers import ...`; conftest.py is for pytest)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: _config.yml, _toc.yml, book/, tools/
