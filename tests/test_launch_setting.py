"""The repository URL setting and the install cell, without a build (the builds are in tests/browser)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from bnbackprop.widgets.base import STATIC_ENV
from tools import run_notebooks
from tools.bootstrap import ENV as CELL_ENV
from tools.bootstrap import HIDE, TAG, add_install_cell, bootstrap_source, is_bootstrap, with_bootstrap, written_url
from tools.repository import ENV, book_config, public_url, repository_url

CONFIG = {"repository": {"branch": "main"},
          "launch_buttons": {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com",
                             "jupyterhub_url": "https://hub.2i2c.cloud", "thebe": False},
          "html": {"use_repository_button": True, "use_issues_button": True}}


@pytest.mark.parametrize("remote, url", [
    ("https://github.com/o/r.git", "https://github.com/o/r"),
    ("git@github.com:o/r.git", "https://github.com/o/r"),
    ("ssh://git@gitlab.com/o/r", "https://gitlab.com/o/r"),
    ("https://token@codeberg.org/o/r/", "https://codeberg.org/o/r"),
    ("https://intranet.example/o/r.git", None),
    ("/srv/git/r.git", None),
    ("", None),
])
def test_public_url(remote, url):
    assert public_url(remote) == url


def test_the_variable_wins(tmp_path):
    assert repository_url(tmp_path, {ENV: " file:///srv/book.git "}) == "file:///srv/book"
    assert repository_url(tmp_path, {}) is None  # not a git checkout: no remote


def test_no_url_leaves_every_button_out():
    out = book_config(CONFIG, None)
    assert out["repository"]["url"] == ""  # not Jupyter Book's own default
    assert not {"binderhub_url", "colab_url", "jupyterhub_url"} & set(out["launch_buttons"])
    assert out["html"]["use_repository_button"] is False and out["html"]["use_issues_button"] is False
    assert CONFIG["html"]["use_repository_button"] is True, "the config given must not change"


def test_a_url_fills_the_buttons_and_colab_only_for_github():
    assert book_config(CONFIG, "https://github.com/o/r")["launch_buttons"]["colab_url"]
    gitlab = book_config(CONFIG, "https://gitlab.com/o/r")
    assert gitlab["repository"]["url"] == "https://gitlab.com/o/r" and "colab_url" not in gitlab["launch_buttons"]


def test_the_install_cell_goes_first_once_and_takes_a_url(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("import x")])
    nb = with_bootstrap(with_bootstrap(nb))
    assert [c.source for c in nb.cells] == ["# T", bootstrap_source(), "import x"]
    assert TAG in nb.cells[1].metadata["tags"] and "remove-cell" in nb.cells[1].metadata["tags"]
    path = tmp_path / "t.ipynb"
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="kept\n")]
    nbformat.write(nb, path)
    add_install_cell(path, "https://github.com/o/r")
    stamped = nbformat.read(path, as_version=4)
    assert [c.source for c in stamped.cells] == ["# T", bootstrap_source("https://github.com/o/r"), "import x"]
    assert stamped.cells[2].outputs[0].text == "kept\n"
    with pytest.raises(ValueError, match="without quotes"):
        bootstrap_source('x" or __import__("os")')


def test_the_install_cell_does_nothing_when_bnbackprop_imports():
    namespace: dict = {}
    exec(bootstrap_source(""), namespace)  # bnbackprop is installed here: no pip, no error, no output
    assert "url" not in namespace


CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "book").glob("*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_install_cell(path):
    """The committed chapter itself installs bnbackprop when opened alone (Colab opens this copy)."""
    cells = nbformat.read(path, as_version=4).cells
    first = next(c for c in cells if c.cell_type == "code")
    assert is_bootstrap(first) and HIDE in first.metadata["tags"], f"{path.name}: run python tools/bootstrap.py"
    url = written_url(first.source)
    assert url is not None and first.source == bootstrap_source(url), f"{path.name}: the install cell was edited"
    assert first.outputs == [] and first.execution_count is None, "stored outputs never run it (tools/run_notebooks.py)"
    assert sum(map(is_bootstrap, cells)) == 1


def run_cell(url: str, environ: dict, pip: mock.MagicMock | None = None) -> mock.MagicMock:
    """Run the install cell as if bnbackprop were missing, with pip replaced; return the fake pip."""
    pip = pip or mock.MagicMock()
    with mock.patch.object(importlib.util, "find_spec", return_value=None), \
            mock.patch.object(subprocess, "run", pip), mock.patch.dict("os.environ", environ, clear=True):
        exec(bootstrap_source(url), {})
    return pip


def pip_target(pip: mock.MagicMock) -> str:
    """The requirement the cell asked pip to install."""
    (args,), kwargs = pip.call_args
    assert args[1:5] == ["-m", "pip", "install", "--quiet"] and kwargs == {"check": True}
    return args[-1]


def test_the_install_cell_installs_from_the_written_url_or_the_variable():
    written = "https://github.com/o/r"
    assert written_url(bootstrap_source(written)) == written and written_url("import x") is None
    assert pip_target(run_cell(written, {})).endswith(f"] @ git+{written}")
    assert pip_target(run_cell("", {CELL_ENV: "file:///srv/book"})).endswith("] @ git+file:///srv/book")
    assert pip_target(run_cell(written, {CELL_ENV: "file:///srv/fork"})).endswith("@ git+file:///srv/fork"), \
        "the variable points a chapter elsewhere (a fork, the lone-chapter test) without editing it"


def test_with_no_url_the_install_cell_says_how_to_install():
    pip = mock.MagicMock()
    with pytest.raises(ImportError) as caught:
        run_cell("", {}, pip)
    message = str(caught.value)
    assert "\n" not in message and CELL_ENV in message and "pip install 'bnbackprop[" in message
    pip.assert_not_called()


def test_storing_outputs_leaves_the_install_cell_unrun(tmp_path, monkeypatch):
    """tools/run_notebooks.py runs every cell but the install cell, which it puts back as it was."""
    nb = with_bootstrap(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"),
                                                        nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")]))
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    ran, static = [], []

    class Kernel:
        """Numbers the cells it is given as a fresh kernel would."""
        def __init__(self, nb, **kwargs):
            self.nb = nb

        def execute(self):
            static.append(os.environ.get(STATIC_ENV))  # what a kernel started now would inherit
            code = [c for c in self.nb.cells if c.cell_type == "code"]
            ran.extend(c.source for c in code)
            for n, cell in enumerate(code, 1):
                cell.execution_count = n

    monkeypatch.setattr(run_notebooks, "NotebookClient", Kernel)
    # run_notebook sets STATIC_ENV in os.environ; monkeypatch puts it back after the test. Left set, every
    # kernel this pytest worker starts later (nbval) would build static explorers and draw their whole grids.
    monkeypatch.setenv(STATIC_ENV, "0")
    run_notebooks.run_notebook(path)
    cells = nbformat.read(path, as_version=4).cells
    assert static == ["1"], "stored outputs hold static explorers"
    assert ran == ["1", "2"]
    assert [c.source for c in cells] == ["# T", bootstrap_source(), "1", "2"]
    assert [c.get("execution_count") for c in cells[1:]] == [None, 1, 2]
