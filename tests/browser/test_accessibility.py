"""axe-core on every page of the HTML book, in the theme's light and dark modes: no serious or critical
violation. Figures carry alt text that says what they show; widget controls carry labels."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def opened(browser, base_url, name, **context_args):
    """A page of the built book, offline (requests outside it are aborted), loaded and settled."""
    context = browser.new_context(**context_args)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url) else route.abort())
    page = context.new_page()
    page.set_default_timeout(WAIT)
    try:
        page.goto(f"{base_url}/{name}.html", wait_until="load")
        settle(page)
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("mode", ["light", "dark"])
@pytest.mark.parametrize("name", PAGES)
def test_axe_finds_nothing_serious(browser, base_url, audit_log, name, mode):
    with opened(browser, base_url, name, viewport={"width": 1280, "height": 900}, color_scheme=mode) as page:
        assert page.evaluate("() => document.documentElement.dataset.theme") == mode, "the theme did not follow the mode"
        results = Axe().run(page)
        violations = results.response["violations"]
        audit_log[f"{name} ({mode})"] = {impact: sorted(v["id"] for v in violations if v["impact"] == impact)
                                         for impact in ("critical", "serious", "moderate", "minor")}
        blocking = [f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
                    for v in violations if v["impact"] in BLOCKING]
        assert blocking == [], "\n".join(blocking)


@pytest.mark.parametrize("name", PAGES)
def test_every_image_says_what_it_shows(browser, base_url, name):
    """Alt text on every image: not empty, not a file name; widget figures get theirs from Python."""
    with opened(browser, base_url, name) as page:
        images = page.evaluate("() => [...document.querySelectorAll('main img')].map(i => ({src: i.src, alt: i.alt}))")
        bad = [i for i in images if len(i["alt"].split()) < 4 or i["alt"].rsplit(".", 1)[-1] in ("png", "svg", "jpg")]
        assert bad == [], f"images without alt text that says what they show: {bad}"


# Dark mode, beyond axe (which leaves text over images, gradients or unrendered sections as
# "incomplete" rather than passing or failing it): the colours a reader actually gets.
# Each text element's colour against the first opaque background behind it (WCAG contrast ratio),
# and each figure's backdrop: a figure with transparent pixels must sit on a light background,
# since matplotlib draws black ink.
DARK_MODE_JS = """() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
      .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
  const backdrop = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const texts = [...document.querySelectorAll(
      '.jupyter-widgets .widget-label, .jupyter-widgets .widget-readout, .jupyter-widgets select, ' +
      '.jupyter-widgets .widget-html-content, main table th, main table td, main figcaption, main p')]
    .filter(el => el.textContent.trim() && el.getClientRects().length && !el.closest('mjx-container'))
    .map(el => ({what: el.tagName.toLowerCase() + '.' + [...el.classList].join('.') + ': ' + el.textContent.trim().slice(0, 40),
                 ratio: ratio(rgb(getComputedStyle(el).color).slice(0, 3), backdrop(el))}));
  const figures = [...document.querySelectorAll('main img')].filter(img => img.naturalWidth > 0).map(img => {
    const canvas = document.createElement('canvas');
    canvas.width = Math.min(img.naturalWidth, 200); canvas.height = Math.min(img.naturalHeight, 200);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let transparent = false;
    for (let i = 3; i < px.length; i += 4) if (px[i] < 250) { transparent = true; break; }
    return {src: img.src.slice(0, 60), transparent, backdrop: lum(backdrop(img))};
  });
  return {texts, figures};
}"""


@pytest.mark.parametrize("name", PAGES)
def test_dark_mode_keeps_text_and_figures_readable(browser, base_url, name):
    """In the theme's dark mode: widget labels, readouts and menus, tables, captions and prose reach
    WCAG AA contrast (4.5:1) against what is behind them; every figure shows on a light ground."""
    with opened(browser, base_url, name, viewport={"width": 1280, "height": 900}, color_scheme="dark") as page:
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        found = page.evaluate(DARK_MODE_JS)
        assert found["texts"], "no text checked: the selectors no longer match the page"
        low = [f"{t['what']} ({t['ratio']:.2f}:1)" for t in found["texts"] if t["ratio"] < 4.5]
        assert low == [], f"text below 4.5:1 in dark mode: {low[:10]}"
        dark = [f["src"] for f in found["figures"] if f["transparent"] and f["backdrop"] < 0.5]
        assert dark == [], f"figures with transparent pixels on a dark background: {dark}"
