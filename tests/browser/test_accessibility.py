"""axe-core on every page of the HTML book, in the theme's light and dark modes: no serious or critical
violation. Figures carry alt text that says what they show; widget controls carry labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe

from test_book_pages import PAGES, wait_for_mathjax  # tests/browser is on sys.path, as pytest puts it

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

BLOCKING = {"serious", "critical"}
WAIT = 30_000


@pytest.fixture(scope="module")
def audit_log():
    """Every page's violations by impact, written to test-artifacts/axe.json for the report."""
    found: dict = {}
    yield found
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "axe.json").write_text(json.dumps(found, indent=1, sort_keys=True))


def settle(page) -> None:
    """Wait for math, widgets (where saved) and fonts, so that axe audits what a reader sees."""
    wait_for_mathjax(page)
    if page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count():
        page.wait_for_selector(".jupyter-widgets", state="attached", timeout=WAIT)
        page.wait_for_function("() => [...document.querySelectorAll('.jupyter-widgets img')].every(i => i.complete)",
                               timeout=WAIT)
    page.evaluate("() => document.fonts.ready.then(() => true)")


@pytest.mark.parametrize("mode", ["light", "dark"])
@pytest.mark.parametrize("name", PAGES)
def test_axe_finds_nothing_serious(browser, base_url, audit_log, name, mode):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=mode)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url) else route.abort())
    page = context.new_page()
    page.set_default_timeout(WAIT)
    try:
        page.goto(f"{base_url}/{name}.html", wait_until="load")
        settle(page)
        assert page.evaluate("() => document.documentElement.dataset.theme") == mode, "the theme did not follow the mode"
        results = Axe().run(page)
        violations = results.response["violations"]
        audit_log[f"{name} ({mode})"] = {impact: sorted(v["id"] for v in violations if v["impact"] == impact)
                                         for impact in ("critical", "serious", "moderate", "minor")}
        blocking = [f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
                    for v in violations if v["impact"] in BLOCKING]
        assert blocking == [], "\n".join(blocking)
    finally:
        context.close()


@pytest.mark.parametrize("name", PAGES)
def test_every_image_says_what_it_shows(browser, base_url, name):
    """Alt text on every image: not empty, not a file name; widget figures get theirs from Python."""
    context = browser.new_context()
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url) else route.abort())
    page = context.new_page()
    page.set_default_timeout(WAIT)
    try:
        page.goto(f"{base_url}/{name}.html", wait_until="load")
        settle(page)
        images = page.evaluate("() => [...document.querySelectorAll('main img')].map(i => ({src: i.src, alt: i.alt}))")
        bad = [i for i in images if len(i["alt"].split()) < 4 or i["alt"].rsplit(".", 1)[-1] in ("png", "svg", "jpg")]
        assert bad == [], f"images without alt text that says what they show: {bad}"
    finally:
        context.close()
