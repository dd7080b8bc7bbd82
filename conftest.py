"""Root pytest configuration: make nbval compare stored PNG figures too.

nbval skips image/png by default. Matplotlib's Agg output is byte-for-byte repeatable for one set
of versions, so comparing the PNGs proves that the figures a reader sees are current.
"""

from __future__ import annotations


def pytest_collection_modifyitems(session, config, items):
    """Drop image/png from the skip list of every notebook nbval collected."""
    for item in items:
        parent = getattr(item, "parent", None)
        skip = getattr(parent, "skip_compare", None)
        if skip is not None and "image/png" in skip:
            parent.skip_compare = tuple(k for k in skip if k != "image/png")
