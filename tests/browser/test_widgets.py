"""The explorers in the static HTML book, with no kernel: every control moved by mouse and by keyboard
changes the figure to the very PNG that Python draws for the new setting; each widget page is light
and quick. Screenshots of each explorer in two states land in test-artifacts/screenshots/."""

from __future__ import annotations

import base64
import json
from pathlib import Path
import os

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import pytest  # noqa: E402

from bnbackprop.widgets.base import STATIC_ENV  # noqa: E402
from bnbackprop.widgets.decompose import decompose_explorer  # noqa: E402
from bnbackprop.widgets.gradient_size import gradient_size_explorer  # noqa: E402
from bnbackprop.widgets.triangle import triangle_explorer  # noqa: E402


ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

# Each widget page, the explorer call its notebook makes (checked against the cell), and that call.
EXPLORERS = {
    "book/03_triangle": ('triangle_explorer(B=5, kind="random")', lambda: triangle_explorer(B=5, kind="random")),
    "book/04_variance_branch": ("decompose_explorer()", lambda: decompose_explorer()),
    "book/06_edge_cases": ("gradient_size_explorer(var=1e-2, rho=0.6, dy_mean=1.0)",
                           lambda: gradient_size_explorer(var=1e-2, rho=0.6, dy_mean=1.0)),
}
MAX_BYTES = 3_000_000  # transferred, all requests of the page together
WAIT = 30_000
NOTE = "computed in advance"  # in the static explorer's note (bnbackprop.widgets.base.WHERE_LIVE)

IMAGE_B64_JS = """async root => {
  const img = root.querySelector('.widget-html img');
  const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let s = ''; for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}"""
TRANSFERRED_JS = """() => [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
    .map(e => ({name: e.name, size: e.transferSize}))"""


@pytest.fixture(scope="module")
def measurements():
    """Page weights and load times, written to test-artifacts/widget-pages.json for the report."""
    found: dict = {}
    yield found
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "widget-pages.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(old | found, indent=1))


def live_explorer(page: str):
    """The page's explorer, built live in this process (same setting, no precomputed grid)."""
    call, make = EXPLORERS[page]
    source = "\n".join(c.source for c in nbformat.read(ROOT / f"{page}.ipynb", as_version=4).cells)
    assert call in source, f"{page}.ipynb no longer calls {call}; update EXPLORERS"
    saved, os.environ[STATIC_ENV] = os.environ.get(STATIC_ENV), "0"
    try:
        return make()
    finally:
        os.environ.pop(STATIC_ENV) if saved is None else os.environ.__setitem__(STATIC_ENV, saved)


def expected_png(explorer, shown: dict) -> bytes:
    """What Python draws for the setting the page shows (grid labels read off the controls)."""
    values = {name: dict(grid.options())[shown[name]] for name, grid in explorer.GRID.items()}
    return explorer.image_bytes(explorer.compute(**(explorer.setting | values)))


class Page:
    """One explorer on one open page: its controls, what they show, and its figure's bytes."""

    def __init__(self, page, explorer):
        self.page, self.explorer = page, explorer
        note = page.locator(".widget-html", has_text=NOTE)
        assert note.count() == 1, f"expected one static explorer note on the page, found {note.count()}"
        self.root = note.locator("xpath=..")
        self.handle = self.root.element_handle()

    def control(self, name: str):
        """The control whose label is the grid's label for `name`."""
        label = self.explorer.GRID[name].label
        box = self.root.locator(".widget-inline-hbox").filter(
            has=self.page.locator("label.widget-label", has_text=label))
        assert box.count() == 1, f"no single control labelled {label!r}"
        return box

    def shown(self) -> dict:
        """The label each control shows now."""
        out = {}
        for name, grid in self.explorer.GRID.items():
            box = self.control(name)
            text = (box.locator("select").evaluate("s => s.options[s.selectedIndex].text") if grid.dropdown
                    else box.locator(".widget-readout").inner_text())
            out[name] = " ".join(text.split())  # the widget shows spaces as no-break spaces
        return out

    def image(self) -> bytes:
        """The bytes of the one figure the explorer shows."""
        assert self.root.locator(".widget-html img").count() == 1, "the explorer should show exactly one figure"
        return base64.b64decode(self.handle.evaluate(IMAGE_B64_JS))

    def src(self) -> str:
        return self.root.locator(".widget-html img").get_attribute("src")

    def wait_for_new_figure(self, old_src: str) -> None:
        self.page.wait_for_function("([root, old]) => { const img = root.querySelector('.widget-html img');"
                                    " return img && img.src !== old && img.complete && img.naturalWidth > 0; }",
                                    arg=[self.handle, old_src], timeout=WAIT)

    def check_figure(self, what: str) -> bytes:
        """The figure shown now is byte for byte the one Python draws for the controls' setting."""
        shown = self.shown()
        data = self.image()
        assert data == expected_png(self.explorer, shown), f"{what}: the page shows {shown} with another figure"
        return data

    def move(self, name: str, how: str) -> None:
        """Move one control to another value, by mouse or by keyboard."""
        grid, box = self.explorer.GRID[name], self.control(name)
        n = len(grid.values)
        current = [label for label, _ in grid.options()].index(self.shown()[name])
        target = 0 if current >= n / 2 else n - 1
        if grid.dropdown:
            select = box.locator("select")
            if how == "mouse":
                select.click()  # opens the list; Playwright then picks the option as a click in it would
                select.select_option(index=target)
                select.evaluate("s => s.blur()")  # the list closes, as after a real click
            else:
                select.focus()
                self.page.keyboard.press("ArrowDown" if current < n - 1 else "ArrowUp")
        else:
            handle = box.locator(".noUi-handle")
            if how == "mouse":
                track = box.locator(".noUi-target").bounding_box()
                x = track["x"] + min(max(track["width"] * target / (n - 1), 2), track["width"] - 2)  # inside the track
                self.page.mouse.click(x, track["y"] + track["height"] / 2)
            else:
                handle.focus()
                self.page.keyboard.press("ArrowRight" if current < n - 1 else "ArrowLeft")


def open_widget_page(browser, base_url, name):
    """Open a page and return (context, page, ms until the explorer's figure and controls are shown)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url) else route.abort())
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.goto(f"{base_url}/{name}.html", wait_until="commit")
    ready = page.wait_for_function(f"""() => {{
        const note = [...document.querySelectorAll('.widget-html')].find(n => n.textContent.includes({NOTE!r}));
        const img = note && note.parentElement.querySelector('.widget-html img');
        return img && img.complete && img.naturalWidth > 0
            && note.parentElement.querySelector('.noUi-handle, select') ? performance.now() : false; }}""",
                                   timeout=WAIT, polling=20).json_value()
    return context, page, ready


@pytest.mark.parametrize("name", list(EXPLORERS))
def test_controls_drive_the_precomputed_figures(browser, base_url, screenshots, measurements, name):
    explorer = live_explorer(name)
    context, page, ready_ms = open_widget_page(browser, base_url, name)
    try:
        page.wait_for_load_state("load")
        ex = Page(page, explorer)
        ex.root.scroll_into_view_if_needed()
        first = ex.check_figure("on load")
        ex.root.screenshot(path=screenshots / f"explorer_{name.split('/')[-1]}_1.png")
        seen = {first}
        for control in explorer.GRID:
            for how in ("mouse", "keyboard"):
                before_shown, before_src, before = ex.shown(), ex.src(), ex.image()
                ex.move(control, how)
                ex.wait_for_new_figure(before_src)
                after_shown = ex.shown()
                assert after_shown[control] != before_shown[control], f"{how} did not move {control}"
                data = ex.check_figure(f"{control} moved by {how}")
                assert data != before, f"{control} moved by {how} but the figure stayed the same"
                seen.add(data)
        ex.root.screenshot(path=screenshots / f"explorer_{name.split('/')[-1]}_2.png")
        assert len(seen) >= 1 + len(explorer.GRID), f"the figures seen were not distinct: {len(seen)}"

        page.evaluate("() => document.fonts.ready.then(() => true)")
        entries = page.evaluate(TRANSFERRED_JS)
        total = sum(e["size"] for e in entries)
        # The time to interactive is recorded, not asserted: an absolute time on a shared machine says
        # more about the machine's load than about the page (the README's rule on timing).
        measurements[name] = {"transferred_bytes": total, "interactive_ms": round(ready_ms),
                              "largest": sorted(entries, key=lambda e: -e["size"])[:5]}
        assert total <= MAX_BYTES, f"{name} transfers {total} bytes (budget {MAX_BYTES})"
    except Exception:
        page.screenshot(path=screenshots / f"explorer_failure_{name.split('/')[-1]}.png", full_page=True)
        raise
    finally:
        context.close()
