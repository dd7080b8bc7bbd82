"""A reader's JupyterLab session: open the triangle chapter, run all cells, move the "B" slider, and
see the explorer's figure change. This is what "tweak the widgets" means for a real user."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "book/03_triangle.ipynb"
SLIDER = "B"  # the description of the triangle explorer's IntSlider
START_TIMEOUT = 90  # s, for the server to answer
RUN_TIMEOUT = 180_000  # ms, for "run all cells" to finish
WAIT = 60_000  # ms, for any other wait in the page
# JupyterLab settings for a quiet, offline session: no news or update checks, and every cell kept
# in the DOM (no windowing), so that the widget is there to be found.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_book(dest: Path) -> None:
    """The book's chapters as a reader's clone has them; the package comes from the venv (editable)."""
    shutil.copytree(ROOT / "book", dest / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_build"))


def write_settings(folder: Path) -> None:
    """JupyterLab's user settings, one JSON file per plugin."""
    for name, values in LAB_SETTINGS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def api(url: str, method: str = "GET"):
    """One bounded request to the server's REST API; the parsed JSON reply, or None."""
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = reply.read()
    return json.loads(body) if body else None


def wait_until_answering(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Poll the status endpoint until the server answers; fail with its log if it dies or hangs."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            api(url)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}", pytrace=False)


def stop(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut down the kernels, then the server's process group; kill it if it lingers."""
    try:
        for kernel in api(f"{base}/api/kernels?token={token}") or []:
            api(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
    except OSError:
        pass  # the server is already gone; the process group is stopped below all the same
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`jupyter lab` on 127.0.0.1 with a token, serving a copy of the book; stopped at teardown."""
    home = tmp_path_factory.mktemp("lab")
    copy_book(home / "work")
    write_settings(home / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    env.pop("MPLBACKEND", None)  # the chapters draw inline
    log = home / "jupyter.log"
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home / 'work'}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # CI runs as root; the server refuses root without this
        cmd.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(proc, f"{base}/api/status?token={token}", log)
        yield base, token, log
    finally:
        stop(proc, base, token)


def run_all_cells(page) -> None:
    """Wait for an idle kernel, run every cell as the Run menu does, and wait until all have run."""
    page.wait_for_function("""() => { const w = window.jupyterapp && jupyterapp.shell.currentWidget;
        return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
            && w.sessionContext.session.kernel.status === 'idle' && w.content && w.content.widgets.length > 0; }""",
                           timeout=WAIT)
    page.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("""() => { const w = jupyterapp.shell.currentWidget;
        const code = w.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.getSource().trim());
        return w.sessionContext.session.kernel.status === 'idle'
            && code.every(c => c.model.executionCount !== null && c.model.executionState !== 'running'); }""",
                           timeout=RUN_TIMEOUT, polling=500)
    errors = page.evaluate("""() => jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code').flatMap(c => c.model.outputs.toJSON())
        .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)""")
    assert errors == [], f"cells raised: {errors}"


def png(data: bytes) -> Image.Image:
    """Decoded RGB pixels of a PNG screenshot."""
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_moving_the_slider_redraws_the_figure(browser, lab, screenshots):
    base, token, log = lab
    assert (ROOT / NOTEBOOK).exists(), f"{NOTEBOOK} is missing"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Offline like the book: whatever JupyterLab would fetch from elsewhere is refused.
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    page = context.new_page()
    page.set_default_timeout(WAIT)
    try:
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="load", timeout=WAIT)
        run_all_cells(page)

        label = page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(SLIDER)}\s*$"))
        slider = page.locator(".widget-slider").filter(has=label).first
        slider.wait_for(state="visible", timeout=WAIT)
        # The explorer: the nearest widget box around the slider that holds a picture.
        explorer = slider.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][.//img][1]")
        figure = explorer.locator("img").last
        figure.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle(), timeout=WAIT)
        readout = slider.locator(".widget-readout")
        before_value, before = readout.inner_text(), figure.screenshot()
        (screenshots / "jupyterlab_triangle_before.png").write_bytes(before)

        slider.locator(".noUi-handle").click()
        page.keyboard.press("ArrowRight")  # one step of the slider, as a reader would with the keyboard
        page.wait_for_function("([el, old]) => el.textContent.trim() !== old",
                               arg=[readout.element_handle(), before_value], timeout=WAIT)
        after = before
        deadline = time.monotonic() + WAIT / 1000
        while after == before and time.monotonic() < deadline:  # the kernel redraws, then the page updates
            page.wait_for_timeout(500)
            after = figure.screenshot()
        (screenshots / "jupyterlab_triangle_after.png").write_bytes(after)
        page.screenshot(path=screenshots / "jupyterlab_triangle_page.png")

        assert int(readout.inner_text()) == int(before_value) + 1, "the slider did not move by one step"
        changed = ImageChops.difference(png(before).resize(png(after).size), png(after)).getbbox()
        assert after != before and changed is not None, "the explorer's figure did not change when B moved"
    except Exception:
        page.screenshot(path=screenshots / "jupyterlab_failure.png")
        raise
    finally:
        context.close()
