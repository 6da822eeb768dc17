"""A real headless browser for the report tests (Chromium or Chrome from a package registry).

Found as ``$RTPLAN_BROWSER`` (a path or a command name), else the first of
:data:`BROWSER_NAMES` on PATH.  Debian/Ubuntu: ``apt-get install chromium``; ``.ci/run``
installs it when it is missing and CI runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: Command names tried in order on PATH.
BROWSER_NAMES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "headless_shell",
)
#: Why a browser test skips (names what to install).
MISSING = (
    "no headless browser found: install Chromium (Debian/Ubuntu: `apt-get install chromium`) "
    "or point RTPLAN_BROWSER at a Chromium/Chrome executable"
)
#: Virtual time the page gets to run its script and decode images, ms.
VIRTUAL_TIME_MS = 5000


def find_browser() -> str | None:
    """Path of the browser executable, or None.

    Raises
    ------
    FileNotFoundError
        ``$RTPLAN_BROWSER`` is set but names no executable (asked for, so not skipped;
        ``.ci/run`` always sets it).
    """
    env = os.environ.get("RTPLAN_BROWSER")
    if env:
        found = shutil.which(env)
        if found is None:
            raise FileNotFoundError(f"RTPLAN_BROWSER={env!r} is not an executable browser")
        return found
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # CI runs as root, where Chromium refuses its sandbox
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=120, check=True)


def dump_dom(browser: str, url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (``--dump-dom``), as HTML text."""
    return _run(browser, profile, "--dump-dom", url).stdout.decode("utf-8")


def screenshot(browser: str, url: str, out: Path, profile: Path, *, size=(1300, 3400)) -> Path:
    """A PNG screenshot of the page as a person would see it."""
    _run(
        browser,
        profile,
        "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={out}",
        url,
    )
    return out
