"""Sphinx extension: every figure's image gets alt text from its caption, unless it has its own.

Without it an image's alt is its file name, which tells a screen reader nothing. The caption is
what the figure shows, written for it; TeX in it is read as plain words (\\partial -> partial).
"""

from __future__ import annotations

import re

from docutils import nodes

TEX_COMMAND = re.compile(r"\\([A-Za-z]+)")


def plain(text: str) -> str:
    """A caption as words: TeX commands lose their backslash, braces and $ go, spaces collapse."""
    text = TEX_COMMAND.sub(r"\1", text).replace("{", "").replace("}", "").replace("$", "")
    return " ".join(text.split())


def needs_alt(image: nodes.image) -> bool:
    """No alt, or one that is only the file's name."""
    alt = image.get("alt", "").strip()
    return not alt or alt == image.get("uri", "") or alt.rsplit("/", 1)[-1] == image.get("uri", "").rsplit("/", 1)[-1]


def add_alt_text(app, doctree, docname) -> None:
    """Give each captioned figure's images their caption as alt text."""
    for figure in doctree.findall(nodes.figure):
        captions = list(figure.findall(nodes.caption))
        if not captions:
            continue
        text = plain(captions[0].astext())
        for image in figure.findall(nodes.image):
            if needs_alt(image):
                image["alt"] = text


def setup(app):
    """Register with Sphinx."""
    app.connect("doctree-resolved", add_alt_text)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
