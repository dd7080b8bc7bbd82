"""The repository URL setting and the install cell, without a build (the builds are in tests/browser)."""

from __future__ import annotations

import nbformat
import pytest

from tools.bootstrap import TAG, add_install_cell, bootstrap_source, with_bootstrap
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
