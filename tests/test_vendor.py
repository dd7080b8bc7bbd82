"""The vendored JavaScript is complete and unchanged, and the configuration points at it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from helpers import ROOT

VENDOR = ROOT / "_vendor"


def sphinx_config() -> dict:
    """The `sphinx.config` block of _config.yml."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]


def site_path(configured: str) -> Path:
    """Where a script path from the config ('../x/y.js', resolved against _static/) lives in _vendor."""
    assert configured.startswith("../"), f"{configured}: expected a path beside _static, like ../mathjax/..."
    return VENDOR / configured.removeprefix("../")


def test_every_vendored_file_matches_its_checksum():
    lines = (VENDOR / "SHA256SUMS").read_text().split("\n")
    sums = {name.removeprefix("./"): digest for digest, name in (line.split("  ", 1) for line in lines if line)}
    assert len(sums) > 20
    changed = [name for name, digest in sums.items() if hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() != digest]
    assert changed == []


def test_config_points_at_vendored_files():
    config = sphinx_config()
    assert "_vendor" in config["html_extra_path"]
    scripts = [config["mathjax_path"], *config["nb_ipywidgets_js"]]
    missing = [s for s in scripts if not site_path(s).is_file()]
    assert missing == []
    assert all("://" not in s for s in scripts), "a script would come from the network"


def test_mathjax_fonts_are_beside_the_component():
    component = site_path(sphinx_config()["mathjax_path"])
    fonts = list((component.parent / "output" / "chtml" / "fonts" / "woff-v2").glob("MathJax_*.woff"))
    assert len(fonts) == 23
