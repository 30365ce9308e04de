"""Headless Chromium for tests: find the binary, load a page, return its DOM after scripts and its console.

No Python browser package is needed: ``--dump-dom`` prints the DOM once the page has loaded and its timers
have run (``--virtual-time-budget``), and ``--enable-logging=stderr`` prints every console message and every
uncaught exception as a line like::

    [pid:tid:date:INFO:CONSOLE:8] "Uncaught ReferenceError: f is not defined", source: file:///x.html (8)

(older builds write ``CONSOLE(8)``). Chromium logs console.log and console.error at the same level there, so
callers that expect a silent page treat every console message as a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_CONSOLE = re.compile(r':CONSOLE(?::\d+|\(\d+\))\] "(?P<message>.*?)", source: (?P<source>\S*) \((?P<line>\d+)\)',
                      re.DOTALL)


@dataclass(frozen=True)
class ConsoleMessage:
    message: str
    source: str
    line: int

    @property
    def uncaught(self) -> bool:
        return self.message.startswith("Uncaught")


@dataclass(frozen=True)
class PageRun:
    dom: str
    console: list[ConsoleMessage]
    stderr: str


def _works(path: str) -> bool:
    # Ubuntu's chromium-browser can be a stub that only tells you to install a snap
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "chrom" in r.stdout.lower()


def find_chromium() -> str | None:
    """$CHROMIUM if set, else the first working Chromium or Chrome on PATH or in /usr/bin; None if there is none."""
    candidates: list[str] = []
    if os.environ.get("CHROMIUM"):
        candidates.append(os.environ["CHROMIUM"])
    for name in NAMES:
        found = shutil.which(name)
        if found:
            candidates.append(found)
        candidates.append(f"/usr/bin/{name}")
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK) and _works(c):
            return c
    return None


def _base_args(chromium: str, profile: str) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",  # tests and CI run as root, where the sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--mute-audio",
        f"--user-data-dir={profile}",  # a fresh profile: no lock shared with another run, nothing left in $HOME
        "--enable-logging=stderr",
        "--v=0",
    ]


def load_page(chromium: str, url: str, *, budget_ms: int = 2000, timeout_s: float = 60) -> PageRun:
    """Load ``url`` headless; return the DOM after scripts (and ``budget_ms`` of virtual time) and the console."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        args = _base_args(chromium, profile) + [f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0 or "<html" not in r.stdout.lower():
        raise RuntimeError(f"chromium failed (rc {r.returncode}) on {url}:\n{r.stderr[-3000:]}")
    console = [ConsoleMessage(m["message"], m["source"], int(m["line"])) for m in _CONSOLE.finditer(r.stderr)]
    return PageRun(dom=r.stdout, console=console, stderr=r.stderr)


def screenshot(chromium: str, url: str, png: str | Path, *, width: int = 1280, height: int = 2400,
               timeout_s: float = 60) -> Path:
    """Save a PNG of the page (for a person to look at)."""
    png = Path(png)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        args = _base_args(chromium, profile) + ["--hide-scrollbars", f"--window-size={width},{height}",
                                                f"--screenshot={png.resolve()}", url]
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium screenshot failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    return png
