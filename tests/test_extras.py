"""Each optional module, imported without its extra, fails in one line that names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from bnbackprop._extras import require

# (module, the package its extra installs, the extra)
OPTIONAL = [
    ("bnbackprop.fast", "numba", "fast"),
    ("bnbackprop.symbolic", "sympy", "symbolic"),
    ("bnbackprop.widgets", "ipywidgets", "widgets"),
    ("bnbackprop.widgets.triangle", "ipywidgets", "widgets"),
    ("bnbackprop.lowprec", "ml_dtypes", "lowprec"),
]


@pytest.mark.parametrize("module, package, extra", OPTIONAL)
def test_missing_extra_is_named_in_one_line(monkeypatch, module, package, extra):
    for name in [m for m in sys.modules if m == module or module.startswith(m + ".") and m != "bnbackprop"]:
        monkeypatch.delitem(sys.modules, name)  # forget the module and its subpackage, so they import afresh
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails as if it were not installed
    with pytest.raises(ModuleNotFoundError) as info:
        importlib.import_module(module)
    message = str(info.value)
    assert "\n" not in message and f"pip install 'bnbackprop[{extra}]'" in message and package in message
    assert info.value.name == package and info.value.__suppress_context__


@pytest.mark.parametrize("module, package, extra", OPTIONAL)
def test_with_the_extra_the_module_imports(module, package, extra):
    assert importlib.import_module(module).__name__ == module


class _FailingPackage:
    """An importer for `outer_package`: the package is there, but it imports `inner_dependency`, which is not."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        return importlib.util.spec_from_loader(name, _FailingPackage) if name == "outer_package" else None

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        import inner_dependency  # noqa: F401


def test_a_missing_dependency_of_the_dependency_is_not_blamed_on_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "inner_dependency", None)
    monkeypatch.setattr(sys, "meta_path", [_FailingPackage, *sys.meta_path])
    with pytest.raises(ModuleNotFoundError) as info:
        require("outer_package", "fast", "bnbackprop.fast")
    assert info.value.name == "inner_dependency" and "bnbackprop[" not in str(info.value)
