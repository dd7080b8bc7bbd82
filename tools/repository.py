"""The book's repository URL, from one setting, and the build configuration that follows from it.

The URL is $BNBACKPROP_REPO_URL, else the git remote `origin` when it is a public hosting URL
(GitHub, GitLab, Codeberg, Bitbucket). It makes the repository, issues and launch buttons (Binder,
JupyterHub, Colab) and the install line that a chapter opened on its own runs. With no URL the
book has none of these buttons: a link that leads nowhere is worse than no link.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

ENV = "BNBACKPROP_REPO_URL"
PUBLIC_HOSTS = ("github.com", "gitlab.com", "codeberg.org", "bitbucket.org")
HOW_TO_ENABLE = (f"No repository URL, so the book has no launch or repository buttons; to add them, set "
                 f"{ENV}=https://github.com/OWNER/REPO or give the checkout a git remote 'origin' on "
                 f"{', '.join(PUBLIC_HOSTS)}.")
SSH = re.compile(r"^(?:ssh://)?git@(?P<host>[^:/]+)[:/](?P<path>.+)$")
LAUNCH_KEYS = ("binderhub_url", "jupyterhub_url", "colab_url", "jupyterlite_url", "deepnote_url")
REPO_BUTTONS = ("use_repository_button", "use_issues_button", "use_edit_page_button")


def public_url(remote: str) -> str | None:
    """https://HOST/OWNER/REPO for a remote on a public host (https or ssh form), else None."""
    remote = remote.strip()
    ssh = SSH.match(remote)
    if ssh:
        remote = f"https://{ssh['host']}/{ssh['path']}"
    m = re.match(r"^https://(?:[^@/]+@)?(?P<host>[^/:]+)/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/?$", remote)
    if not m or m["host"].lower() not in PUBLIC_HOSTS:
        return None
    return f"https://{m['host'].lower()}/{m['owner']}/{m['repo']}"


def git_remote(root: Path) -> str:
    """The URL of the checkout's remote 'origin' ('' if there is none)."""
    proc = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def repository_url(root: Path, environ=os.environ) -> str | None:
    """The one setting: $BNBACKPROP_REPO_URL (any URL pip and the buttons can use), else a public origin."""
    given = environ.get(ENV, "").strip()
    if given:
        return given.rstrip("/").removesuffix(".git")
    return public_url(git_remote(root))


def book_config(config: dict, url: str | None) -> dict:
    """_config.yml's settings with the repository URL filled in, or every button that needs it left out."""
    out = copy.deepcopy(config)
    repo = out.setdefault("repository", {})
    launch = out.setdefault("launch_buttons", {})
    html = out.setdefault("html", {})
    if url:
        repo["url"] = url
        if not url.startswith("https://github.com/"):
            launch.pop("colab_url", None)  # Colab opens notebooks from GitHub only
        return out
    repo["url"] = ""  # empty, not absent: Jupyter Book's default would be its own repository
    for key in LAUNCH_KEYS:
        launch.pop(key, None)
    for key in REPO_BUTTONS:
        html[key] = False
    return out
