"""Every page of the HTML book in a real browser: offline, math rendered, figures loaded, widgets shown."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from tools import toc
from tools.repository import repository_url

LAUNCH_HOSTS = ("mybinder.org", "colab.research.google.com", "hub.2i2c.cloud")

ROOT = Path(__file__).resolve().parents[2]
PAGES = toc.toc_files(ROOT)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LOAD_TIMEOUT = 30_000  # ms, for every wait on a page
# Text outside code and rendered math that still looks like TeX: any $ (a math delimiter left
# over, even beside rendered math), \( or \[, or a \command{.
RAW_TEX = re.compile(r"\$|\\\(|\\\[|\\[a-zA-Z]+\{")

# The text a reader sees, without code blocks and without what MathJax rendered.
VISIBLE_PROSE_JS = """() => {
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, .MathJax';
  const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (el && !el.closest(skip) && el.getClientRects().length) parts.push(node.textContent);
  }
  return parts.join(' ');
}"""

# Wait for every image (made eager, so that none waits for a scroll) to finish, loaded or broken.
IMAGES_SETTLED_JS = """() => Promise.all([...document.images].map(img => {
  img.loading = 'eager';
  return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
}))"""

IMAGES_JS = "() => [...document.images].map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth}))"


@dataclass
class Visit:
    """What a page did while it loaded: its problems and its rendered state."""

    problems: list[str] = field(default_factory=list)


def source_of(page: str) -> Path:
    """The .md or .ipynb file a toc entry names."""
    return next(ROOT / f"{page}{ext}" for ext in (".ipynb", ".md") if (ROOT / f"{page}{ext}").exists())


def widget_state(page: str) -> dict:
    """The saved ipywidgets state of a notebook page ({} for none)."""
    path = source_of(page)
    if path.suffix != ".ipynb":
        return {}
    meta = nbformat.read(path, as_version=4).metadata.get("widgets", {})
    return meta.get(WIDGET_STATE, {}).get("state", {})


def screenshot_name(page: str) -> str:
    """book/03_triangle -> book_03_triangle.png."""
    return page.replace("/", "_") + ".png"


def open_page(browser, base_url: str, path: str):
    """Open one page with a recorder of console errors, page errors, failed and off-site requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    visit = Visit()

    def only_localhost(route):
        # The book must read offline: anything not served by our localhost server is a failure.
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            visit.problems.append(f"off-site request: {route.request.url}")
            route.abort()
    context.route("**/*", only_localhost)
    page = context.new_page()
    page.set_default_timeout(LOAD_TIMEOUT)
    page.on("console", lambda m: m.type == "error" and visit.problems.append(f"console error: {m.text} at {m.location}"))
    page.on("pageerror", lambda e: visit.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: r.url.startswith(base_url) and visit.problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and visit.problems.append(f"HTTP {r.status}: {r.url}"))
    page.goto(f"{base_url}/{path}", wait_until="load", timeout=LOAD_TIMEOUT)
    return context, page, visit


def wait_for_mathjax(page) -> None:
    """Wait until MathJax, if the page loads it, has typeset everything."""
    if page.evaluate("() => !document.querySelector('script[src*=\"mathjax\"]')"):
        return
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=LOAD_TIMEOUT)
    page.evaluate("() => MathJax.startup.promise")


@pytest.mark.parametrize("name", PAGES)
def test_page_in_browser(browser, base_url, screenshots, name):
    """No console error or failed request; math rendered, no raw TeX; every image loaded; widgets shown."""
    context, page, visit = open_page(browser, base_url, f"{name}.html")
    try:
        wait_for_mathjax(page)
        page.evaluate(IMAGES_SETTLED_JS)
        state = widget_state(name)
        if state:
            page.wait_for_selector(".jupyter-widgets", state="attached", timeout=LOAD_TIMEOUT)
        page.evaluate("() => document.fonts.ready.then(() => true)")
        page.screenshot(path=screenshots / screenshot_name(name), full_page=True)

        math = page.evaluate("""() => [...document.querySelectorAll('main .math')].map(el => ({
            rendered: !!el.querySelector('mjx-container'), text: el.textContent.slice(0, 80)}))""")
        assert [m["text"] for m in math if not m["rendered"]] == [], "math left unrendered by MathJax"
        errors = page.evaluate("() => [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent)")
        assert errors == [], f"MathJax could not typeset: {errors}"
        prose = page.evaluate(VISIBLE_PROSE_JS)
        raw = [prose[max(m.start() - 40, 0):m.end() + 40] for m in RAW_TEX.finditer(prose)]
        assert raw == [], f"raw TeX left in the visible text: {raw[:10]}"
        if name != toc.load_toc(ROOT)["root"] and "$" in source_of(name).read_text():
            assert math, "the source has $ math but the page shows no MathJax output"

        broken = [img["src"] for img in page.evaluate(IMAGES_JS) if img["width"] <= 0]
        assert broken == [], f"images that did not load: {broken}"

        if state:
            check_widgets(page, state)
        assert visit.problems == [], "\n".join(visit.problems)
    finally:
        context.close()


def check_widgets(page, state: dict) -> None:
    """Every saved widget view is rendered; sliders show as sliders and images as loaded images."""
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]')
    assert views.count() > 0, "saved widget state but no widget view on the page"
    unrendered = page.evaluate("""() => [...document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-view+json"]')].filter(
        s => !s.parentElement.querySelector('.jupyter-widgets')).length""")
    assert unrendered == 0, f"{unrendered} widget view(s) not rendered"
    models = [m.get("model_name") for m in state.values()]
    if any(name.endswith("SliderModel") for name in models):
        sliders = page.locator(".jupyter-widgets .widget-slider")
        assert sliders.count() > 0 and sliders.first.is_visible(), "a saved slider is not shown"
        tracks = page.evaluate("() => [...document.querySelectorAll('.widget-slider .noUi-target')].map(t => t.getBoundingClientRect().width)")
        assert tracks and min(tracks) >= 60, f"slider tracks too narrow to use: {tracks} px"
    # A static figure above each interactive cell, so that the page shows a real picture without a kernel.
    bare = page.evaluate("""() => [...document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-view+json"]')].filter(view => {
          let cell = view.closest('.cell');
          for (cell = cell && cell.previousElementSibling; cell; cell = cell.previousElementSibling) {
            if (cell.querySelector('script[type="application/vnd.jupyter.widget-view+json"]')) return true;
            if ([...cell.querySelectorAll('img')].some(img => !img.closest('.jupyter-widgets'))) return false;
          }
          return true; }).length""")
    assert bare == 0, f"{bare} interactive cell(s) without a static figure above them"
    if "ImageModel" in models:
        widths = page.evaluate("() => [...document.querySelectorAll('.jupyter-widgets img')].map(i => i.naturalWidth)")
        assert widths and min(widths) > 0, f"widget images not shown: natural widths {widths}"


def test_no_cdn_in_built_html(site):
    """No page or stylesheet loads a script, stylesheet, font or image from another host."""
    loads = re.compile(r"<(?:script|img|iframe)[^>]*\ssrc=[\"']https?://[^\"']*|<link[^>]*\shref=[\"']https?://[^\"']*"
                       r"|url\([\"']?https?://[^)]*\)|@import\s+[\"']https?://[^\"']*")
    found = {str(p.relative_to(site)): loads.findall(p.read_text(errors="replace"))
             for p in site.rglob("*") if p.suffix in {".html", ".css"}}
    assert {k: v for k, v in found.items() if v} == {}


def test_no_page_loads_fontawesome_js(site):
    """The theme's icons come from its web font; _templates/layout.html drops the SVG+JS form (543 KB
    gzipped, and main-thread time on every page before a widget responds)."""
    pages = [p for p in site.rglob("*.html") if "_static" not in p.parts]
    assert len(pages) > 15
    assert [str(p.relative_to(site)) for p in pages if "fontawesome.js" in p.read_text(errors="replace")] == []


def test_reader_features(browser, base_url, site):
    """Search finds a word; numbered chapters; .ipynb downloads; launch buttons made from the repository URL, if any."""
    url = repository_url(ROOT)
    repo = (url or "").removeprefix("https://github.com/")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(LOAD_TIMEOUT)
    try:
        page.goto(f"{base_url}/search.html?q=gradient", wait_until="load")
        page.wait_for_selector("#search-results li", timeout=LOAD_TIMEOUT)
        assert page.locator("#search-results li").count() > 0

        page.goto(f"{base_url}/{PAGES[0]}.html", wait_until="load")
        links = page.eval_on_selector_all("nav.bd-docs-nav a.reference",
                                          "els => els.map(a => [a.href.split('#')[0], a.innerText])")
        labels = {href.removeprefix(f"{base_url}/").removesuffix(".html"): text for href, text in links}
        for chapter in toc.numbered_chapters(ROOT):
            label = labels.get(chapter)
            assert label and re.match(r"\d+\.\s", label), f"{chapter} is not numbered in the navigation: {label!r}"

        for name in (p for p in PAGES if source_of(p).suffix == ".ipynb"):
            page.goto(f"{base_url}/{name}.html", wait_until="load")
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
            ipynb = [h for h in hrefs if h.endswith(f"{name.split('/')[-1]}.ipynb") and h.startswith(base_url)]
            assert ipynb, f"{name}: no .ipynb download link"
            assert page.request.get(ipynb[0]).ok, f"{name}: the .ipynb download is broken"
            if url is None:  # no repository URL: no launch button at all (test_launch.py checks every page)
                assert not [h for h in hrefs if any(host in h for host in LAUNCH_HOSTS)], f"{name}: a launch link"
                continue
            for needle in (f"mybinder.org/v2/gh/{repo}/", f"/hub/user-redirect/git-pull?repo=https%3A//github.com/{repo}",
                           f"colab.research.google.com/github/{repo}/"):
                assert any(needle in h and f"{name}.ipynb" in h for h in hrefs), f"{name}: no launch link with {needle}"
    finally:
        context.close()
