"""Optional dependencies: importing a module whose extra is missing says, in one line, what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import `module`, or raise ModuleNotFoundError naming the extra `bnbackprop[extra]` that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name != top:  # the package is there but one of its own dependencies is not: not ours to explain
            raise
        raise ModuleNotFoundError(f"{needed_by} needs {top}, which is not installed: "
                                  f"pip install 'bnbackprop[{extra}]'", name=top) from None
