"""Fixtures for the browser tests: the system Chromium under Playwright, and the built book on localhost.

These tests run only from `make browser-test` (pyproject's norecursedirs keeps them out of `make test`).
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools.build import build_book

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "test-artifacts"
# What the HTML is built from; a build older than any of these is stale.
BOOK_SOURCES = ("book", "_vendor", "_static", "_templates", "_config.yml", "_toc.yml")
# Headless, and quiet: no background networking, updates or sync (this machine has no internet).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
HOW_TO_GET_CHROMIUM = ("Chromium is needed for the browser tests. On Debian/Ubuntu: "
                       "`apt-get update && apt-get install -y chromium chromium-driver` (as root; `make browser-test` "
                       "does this itself when run as root), or set CHROMIUM=/path/to/chromium.")


def chromium_path() -> str:
    """The Chromium to drive: $CHROMIUM, else the Debian package's /usr/bin/chromium."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"no Chromium at {path}. {HOW_TO_GET_CHROMIUM}", pytrace=False)
    return path


def newest_source_mtime() -> float:
    """The latest modification time of any file the book is built from."""
    times = []
    for name in BOOK_SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts]
        times += [p.stat().st_mtime for p in files]
    return max(times)


@pytest.fixture(scope="session")
def site() -> Path:
    """The built HTML book: built now (strictly, as `make book` does) if it is missing or stale."""
    stamp = HTML / ".buildinfo"
    if not stamp.exists() or stamp.stat().st_mtime < newest_source_mtime():
        # Sphinx copies html_extra_path (the vendored JavaScript) only when it writes some page,
        # so a stale site is rebuilt whole.
        shutil.rmtree(HTML, ignore_errors=True)
        proc = build_book(ROOT)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "WARNING" not in log, f"the book does not build cleanly:\n{log[-4000:]}"
    assert (HTML / "index.html").exists(), "the build wrote no index.html"
    return HTML


class QuietHandler(SimpleHTTPRequestHandler):
    """Serve files as a static host does (GitHub Pages, nginx): text gzipped when the browser asks, no log."""

    COMPRESS = {".html", ".js", ".css", ".json", ".svg", ".txt", ".ipynb", ".map"}
    cache: dict = {}

    def do_GET(self):  # noqa: N802 (the base class's name)
        path = Path(self.translate_path(self.path))
        if path.is_file() and path.suffix in self.COMPRESS and "gzip" in self.headers.get("Accept-Encoding", ""):
            key = (path, path.stat().st_mtime)
            if key not in self.cache:
                self.cache[key] = gzip.compress(path.read_bytes(), compresslevel=6)
            body = self.cache[key]
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(str(path)))
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="session")
def base_url(site: Path):
    """The book served over HTTP on 127.0.0.1 at a free port, for the whole session."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    """Headless system Chromium; Playwright gives each launch a fresh, empty user-data-dir."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder for page screenshots (gitignored, kept after the run as a test artifact)."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
