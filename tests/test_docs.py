"""The documentation site builds, strictly and offline: `mkdocs build --strict` fails on any warning (a broken
link or anchor, a page missing from the nav, a snippet whose file is gone), and the built pages load nothing
from another host (no web fonts, no CDN scripts or styles)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_mkdocs_build_strict(tmp_path: Path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > len(list(DOCS.glob("*.md")))  # every page, plus 404.html
    # offline: nothing a page links as a style, script or font comes from another host
    remote = re.compile(r"<(?:link|script|img)\b[^>]*\b(?:href|src)=\"(?:https?:)?//", re.I)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not remote.search(html), f"{page.relative_to(site)} loads a remote resource"
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html, page
    # the README's front page reaches the site's home through the snippet, not a second copy
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "make demo" in home and "compute-optimal (allocated)" in home


def test_nav_lists_every_page_and_the_readme_links_them():
    nav = [page for entry in yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"] for page in entry.values()]
    assert sorted(nav) == sorted(p.name for p in DOCS.glob("*.md"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", readme))
    assert {f"docs/{p}" for p in nav if p != "index.md"} <= linked  # a code host shows the README, not the site
    for target in linked:
        assert (ROOT / target).is_file(), f"README.md links {target}, which does not exist"
