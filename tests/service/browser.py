"""Headless Chromium for the console's browser tests: Debian's ``/usr/bin/chromium`` under
Playwright (the Python package), no browser download.

:func:`missing` says why the tests cannot run here (they skip with that reason);
:func:`launch` starts the browser with the flags that keep it off the network.
"""

from __future__ import annotations

import importlib.util
import os

CHROMIUM = os.environ.get("CONSOLE_TEST_CHROMIUM", "/usr/bin/chromium")
#: Headless, and nothing that phones home (updates, sync, QUIC probes, first-run pages).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing() -> str | None:
    """Why the browser tests cannot run (None when they can)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing: pip install -e '.[dev]'"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install chromium (make test does it as root)"
    return None


def launch(playwright):
    """A headless Chromium of the system (``playwright`` is ``sync_playwright()``'s handle)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
