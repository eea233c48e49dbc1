"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, with a route guard.

The browser is launched from ``/usr/bin/chromium``: Playwright's own browser download
is never used (``scripts/test`` installs the Debian package). Every page opens in a
context whose ``route("**/*")`` handler records each request and lets through only
those to 127.0.0.1; the :class:`Console` fixture fails its test when any other host
was asked for. Set ``BULKPORT_CONSOLE_SHOTS=<dir>`` to also copy the screenshots
there (that is how docs/console/*.png are made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: Longest wait for something to appear on a page (ms); generous for a loaded machine.
WAIT_MS = 60_000
#: Records the values every progress bar takes, by its aria-label, and the texts of the
#: upload's status line (the tests read them after the page has moved on).
BAR_RECORDER = """
window.__bars = {};
window.__uploadTexts = [];
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target;
    if (r.type === "childList" && el.matches && el.matches("[data-upload-text]")) {
      window.__uploadTexts.push(el.textContent);
    } else if (el.getAttribute && el.getAttribute("role") === "progressbar") {
      const label = el.getAttribute("aria-label") || "";
      (window.__bars[label] = window.__bars[label] || []).push(
        Number(el.getAttribute("aria-valuenow")));
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true,
                     attributeFilter: ["aria-valuenow"]});
"""


# Package scope, not session: Playwright's sync API keeps an asyncio loop running in
# the main thread while it is open, and every later test calling asyncio.run() would
# fail ("cannot be called from a running event loop").
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():  # a missing browser fails the suite; it never skips
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    try:
        yield b
    finally:
        b.close()


class Console:
    """One browser context on a server: its page, every URL it requested, screenshots."""

    def __init__(self, context: BrowserContext, base: str, shots: Path) -> None:
        self.context = context
        self.base = base
        self.shots = shots
        self.requests: list[str] = []
        self.failed: list[str] = []
        context.route("**/*", self._guard)
        context.add_init_script(BAR_RECORDER)
        context.set_default_timeout(WAIT_MS)
        self.page: Page = context.new_page()
        self.page.on("response", lambda r: r.status >= 500 and self.failed.append(
            f"{r.status} {r.url}"))

    def _guard(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(url)
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    def off_host(self) -> list[str]:
        return [u for u in self.requests if urlsplit(u).hostname != "127.0.0.1"]

    def open(self, fragment: str = "") -> Page:
        self.page.goto(f"{self.base}/{fragment}")
        return self.page

    def shot(self, name: str, page: Page | None = None, full_page: bool = False) -> Path:
        path = self.shots / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=full_page)
        copy_to = os.environ.get("BULKPORT_CONSOLE_SHOTS")
        if copy_to:
            Path(copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(copy_to) / path.name)
        return path

    def bars(self, label: str) -> list[float]:
        values: dict[str, list[float]] = self.page.evaluate("window.__bars")
        return values.get(label, [])


def open_console(browser: Browser, base: str, tmp_path: Path, **context_args: Any
                 ) -> Iterator[Console]:
    context = browser.new_context(**{"accept_downloads": True,
                                     "viewport": {"width": 1280, "height": 800}, **context_args})
    console = Console(context, base, tmp_path)
    try:
        yield console
        assert console.off_host() == [], "requests left 127.0.0.1"
        assert console.failed == [], "server errors"
    finally:
        context.close()
