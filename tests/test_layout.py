"""The package says what is public: every module has an `__all__`, and no module reaches into another's privates."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

import bnbackprop
from helpers import ROOT

PACKAGE = Path(bnbackprop.__file__).parent


def module_name(path: Path) -> str:
    """bnbackprop.x.y for src/bnbackprop/x/y.py (the package itself for __init__.py)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_every_module_says_what_is_public(path):
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, (ast.Assign, ast.AnnAssign)) and "__all__" in ast.unparse(n).split("=")[0] for n in tree.body), \
        f"{module_name(path)} has no __all__"
    if path.name == "__main__.py":
        return  # importing it would run the CLI
    module = importlib.import_module(module_name(path))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"{module.__name__}.__all__ lists names it does not define: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{module.__name__}.__all__ repeats a name"


def imported_from(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `from <module> import name` in the file, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(module, a.name) for a in node.names]
    return found


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_private_names_stay_in_their_package(path):
    """`_name` is for its own module and the modules beside it in the same folder, never for other folders."""
    here = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for module, name in imported_from(path):
        if not module.startswith("bnbackprop") or not name.startswith("_") or name.startswith("__"):
            continue
        owner = module if (PACKAGE.parent / Path(*module.split("."))).is_dir() else module.rpartition(".")[0]
        assert owner == here, f"{module_name(path)} imports the private {module}.{name}; make it public or keep it home"


def layout_section() -> str:
    """The README's Layout section, up to the next heading."""
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_layout_names_every_folder_and_module():
    """Each top-level entry git tracks, and each module of the package, has its row; each row names something real."""
    text = layout_section()
    named = set(re.findall(r"`([^`]+)`", text))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {p.split("/")[0] + ("/" if "/" in p else "") for p in tracked} - {".gitignore", "README.md", "Makefile"}
    assert sorted(top - named) == [], "top-level entries missing from the README's layout table"
    modules = {p.stem if p.suffix else p.name + "/" for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    assert sorted(modules - named) == [], "modules missing from the README's library table"
    rows = [r for r in re.findall(r"^\| `([^`]+)`", text, re.M) if r not in ("module", "path")]
    for row in rows:
        where = ROOT / row if "/" in row or "." in row else PACKAGE / f"{row}.py"
        assert where.exists() or (PACKAGE / row).exists(), f"README layout names {row}, which is not in the tree"
