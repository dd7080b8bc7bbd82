"""Test settings: one hypothesis profile for every property test. Shared helpers live in helpers.py."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("book", max_examples=40, deadline=None, derandomize=True, print_blob=True)
settings.load_profile("book")
