"""Launch buttons that land: the repository URL comes from one setting; without it no button or link
leads anywhere; a chapter opened on its own installs bnbackprop from that URL (git+file:// here).

The builds run in temporary copies of the book, so the checkout's own _build is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools.bootstrap import TAG, bootstrap_source, is_bootstrap, written_url
from tools.build import build_book
from tools.repository import ENV, HOW_TO_ENABLE, repository_url

ROOT = Path(__file__).resolve().parents[2]
BOOK_FILES = ("book", "_config.yml", "_toc.yml", "_static", "_vendor", "tools")
LAUNCH = re.compile(r"mybinder\.org|colab\.research\.google\.com|hub\.2i2c\.cloud|git-pull\?repo")
PLACEHOLDERS = re.compile(r"github\.com/bnbackprop|executablebooks/jupyter-book|github\.com/example")
LONE_CHAPTER = "03_triangle.ipynb"


def copy_book(dest: Path) -> Path:
    """The files the book is built from, copied into dest (not a git checkout: it has no remote)."""
    for name in BOOK_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    return dest


def built(tmp_path: Path, url: str | None):
    """Build a copy of the book with `url` as the setting (None: no setting at all)."""
    root = copy_book(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != ENV} | ({ENV: url} if url else {})
    proc = build_book(root, environ=env)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-3000:]
    return root / "_build" / "html", proc


def pages(site: Path) -> dict[str, str]:
    """Every HTML page of a site, by path."""
    return {str(p.relative_to(site)): p.read_text(errors="replace") for p in site.rglob("*.html")}


def test_no_url_no_buttons(tmp_path):
    site, proc = built(tmp_path, None)
    assert proc.stdout.count(HOW_TO_ENABLE) == 1, "the build should say once how to turn the buttons on"
    found = {name: LAUNCH.findall(text) + PLACEHOLDERS.findall(text) for name, text in pages(site).items()}
    assert {k: v for k, v in found.items() if v} == {}, "launch or placeholder links in a build with no URL"
    chapter = (site / "book" / "03_triangle.html").read_text()
    assert "launch-buttons" not in chapter and "repository-button" not in chapter
    assert "03_triangle.ipynb" in chapter, "the .ipynb download stays"


def test_url_makes_the_buttons_and_the_install_line(tmp_path):
    url = "https://github.com/example/bn-book"
    site, proc = built(tmp_path, url)
    assert HOW_TO_ENABLE not in proc.stdout
    chapter = (site / "book" / "03_triangle.html").read_text()
    for needle in ("mybinder.org/v2/gh/example/bn-book/main?urlpath=lab/tree/book/03_triangle.ipynb",
                   "colab.research.google.com/github/example/bn-book/blob/main/book/03_triangle.ipynb",
                   'href="https://github.com/example/bn-book"'):
        assert needle in chapter, f"no {needle}"
    downloaded = nbformat.read(site / "_sources" / "book" / LONE_CHAPTER, as_version=4)
    cell = next(c for c in downloaded.cells if TAG in c.metadata.get("tags", []))
    assert cell.source == bootstrap_source(url), "the downloaded chapter does not install from the book's URL"


def test_the_setting_prefers_the_variable_then_a_public_remote(tmp_path):
    assert repository_url(tmp_path, {ENV: "https://gitlab.com/a/b.git/"}) == "https://gitlab.com/a/b"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert repository_url(tmp_path, {}) is None
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:o/r.git"], check=True)
    assert repository_url(tmp_path, {}) == "https://github.com/o/r"
    subprocess.run(["git", "-C", str(tmp_path), "remote", "set-url", "origin", "https://intranet.example/o/r"], check=True)
    assert repository_url(tmp_path, {}) is None, "a private host is not a URL for readers"


def pinned(name: str) -> str:
    """The requirement line that requirements.txt pins for a package."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return next(line.split("#")[0].strip() for line in lines if re.match(rf"{name}==", line, re.I))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_lone_chapter_installs_bnbackprop_and_runs(tmp_path):
    """One chapter in an empty folder, a fresh venv with only Jupyter's runner and kernel, the URL
    pointing at a local git repository: the chapter installs bnbackprop itself and runs clean."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(repo)], check=True)
    alone = tmp_path / "alone"
    alone.mkdir()
    # The committed chapter as it is, with its own install cell (as Colab opens it); the setting
    # below points that cell at the local repository.
    shutil.copy2(ROOT / "book" / LONE_CHAPTER, alone / LONE_CHAPTER)
    first = next(c for c in nbformat.read(alone / LONE_CHAPTER, as_version=4).cells if c.cell_type == "code")
    assert is_bootstrap(first) and first.source == bootstrap_source(written_url(first.source))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # A current pip, as Colab and `make` have: pip 23's parser refuses `name @ git+file:///path`.
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", pinned("nbclient"), pinned("ipykernel"), pinned("nbformat")],
                   check=True)
    probe = subprocess.run([python, "-c", "import bnbackprop"], capture_output=True)
    assert probe.returncode != 0, "the fresh venv must not have bnbackprop yet"
    run = ("import nbformat, nbclient; p = 'LONE'; nb = nbformat.read(p, as_version=4); "
           "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3').execute(); "
           "boot = [c for c in nb.cells if 'TAG' in c.metadata.get('tags', [])]; "
           "print('BOOT_OUTPUTS', sum(len(c.outputs) for c in boot))").replace("LONE", LONE_CHAPTER).replace("TAG", TAG)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env |= {ENV: f"file://{repo}", "PATH": f"{venv / 'bin'}:{env['PATH']}", "MPLBACKEND": "Agg",
            "JUPYTER_PATH": str(venv / "share" / "jupyter")}
    proc = subprocess.run([python, "-c", run], cwd=alone, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"the lone chapter failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert subprocess.run([python, "-c", "import bnbackprop.widgets.triangle"], env=env).returncode == 0
    # Run again: bnbackprop is there now, and the first cell shows nothing.
    proc = subprocess.run([python, "-c", run], cwd=alone, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "BOOT_OUTPUTS 0" in proc.stdout, proc.stdout[-1000:] + proc.stderr[-2000:]
