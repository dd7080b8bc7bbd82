"""The book's table of contents as data: which files `_toc.yml` lists, and which parts are numbered."""

from __future__ import annotations

from pathlib import Path

import yaml


def load_toc(root: Path) -> dict:
    """The parsed `_toc.yml` in `root`."""
    path = Path(root) / "_toc.yml"
    if not path.is_file():
        raise ValueError(f"no _toc.yml in {root}; pass the folder that holds the book's _toc.yml and _config.yml")
    return yaml.safe_load(path.read_text())


def toc_files(root: Path) -> list[str]:
    """Every file named in _toc.yml (without suffix), root first, in reading order."""
    toc = load_toc(root)
    found = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                found.append(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []):
                walk(part.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return found


def numbered_chapters(root: Path) -> list[str]:
    """The chapters of every part marked `numbered: true`, in reading order."""
    parts = load_toc(root).get("parts", [])
    return [c["file"] for p in parts if p.get("numbered") for c in p.get("chapters", []) if "file" in c]
