"""Time to interactive of the widget pages, measured several times: `python tools/page_timing.py [--runs N]`.

Serves the built book (_build/html) as the browser tests do (gzipped, on 127.0.0.1), opens each
widget page in a fresh context of headless Chromium, and takes the time from navigation until the
explorer shows its figure and a control (tests/browser/test_widgets.open_widget_page, the same
wait the browser tests record). Prints the median and range per page with the load average, and
writes them to test-artifacts/page-timing.json. A measurement, not a test: on a shared machine an
absolute time says as much about the machine's load as about the page. Run it without `nice`
(needs requirements-browser.txt and a built book).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: this file lives in its tools/
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "browser"))  # test_widgets imports its siblings as pytest does

from tests.browser.conftest import CHROMIUM_ARGS, QuietHandler, chromium_path  # noqa: E402
from tests.browser.test_widgets import EXPLORERS, open_widget_page  # noqa: E402


def measure(site: Path, runs: int) -> dict:
    """{page: [ms, ...]} over `runs` rounds, each round opening every widget page once (after one warm-up)."""
    from playwright.sync_api import sync_playwright

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    times: dict = {name: [] for name in EXPLORERS}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            for round_ in range(runs + 1):  # round 0 fills the server's gzip cache and the OS's file cache
                for name in EXPLORERS:
                    context, _page, ready_ms = open_widget_page(browser, base, name)
                    context.close()
                    if round_:
                        times[name].append(round(ready_ms))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return times


def main(argv: list[str]) -> int:
    """Measure, print one line per page, write test-artifacts/page-timing.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds over the widget pages (default 7)")
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "html", help="the built HTML book")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    load_before = os.getloadavg()
    times = measure(args.site, args.runs)
    load_after = os.getloadavg()
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after,
              "pages": {name: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t), "runs_ms": t}
                        for name, t in times.items()}}
    for name, page in record["pages"].items():
        print(f"{name}: median {page['median_ms']:.0f} ms, range {page['min_ms']}-{page['max_ms']} ms over {args.runs} runs")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
    out = ROOT / "test-artifacts" / "page-timing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
