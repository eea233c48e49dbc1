"""The console on a server with API keys: it asks for one, says why a key is refused,
keeps the accepted key for the tab only, and sends it with every call and download."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import open_console
from tests.conftest import USERS_HUGE, ServerProcess, empty_tables

pytestmark = pytest.mark.e2e

KEY = "console-test-key-1"


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        empty_tables(c)
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("console-keys") / "data",
                           env={"BULKPORT_API_KEYS": KEY}).start()
    try:
        yield server
    finally:
        server.stop()


def test_console_asks_for_a_key_and_uses_it(browser: Browser, srv: ServerProcess,
                                            tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with USERS_HUGE.open("rb") as f:
        r = httpx.post(f"{srv.base}/v1/imports", headers=auth, data={"resource": "users"},
                       files={"file": ("users_huge.csv", f, "text/csv")}, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    with httpx.Client(base_url=srv.base, headers=auth, timeout=30) as c:
        while c.get(f"/v1/imports/{job_id}").json()["status"] in ("pending", "processing"):
            time.sleep(0.1)
    # The page and its assets need no key; the API does.
    assert httpx.get(f"{srv.base}/").status_code == 200
    assert httpx.get(f"{srv.base}/console/static/console.css").status_code == 200
    assert httpx.get(f"{srv.base}/v1/imports").status_code == 401

    for console in open_console(browser, srv.base, tmp_path):
        page = console.open("#/jobs")
        panel = page.locator("#key-panel")
        expect(panel).to_be_visible()
        expect(panel).to_contain_text("needs an API key (401")
        console.shot("api-key")

        page.get_by_label("API key", exact=True).fill("not-the-key")
        page.get_by_role("button", name="Use this key").click()
        expect(panel).to_contain_text("refused (403 forbidden)")
        expect(page.locator("li.job")).to_have_count(0)

        page.get_by_label("API key", exact=True).fill(KEY)
        page.get_by_role("button", name="Use this key").click()
        expect(panel).to_be_hidden()
        expect(page.locator("li.job")).to_have_count(1)
        assert page.evaluate("sessionStorage.getItem('bulkport.apiKey')") == KEY
        assert page.evaluate("localStorage.length") == 0

        # A download carries the key too (fetched, then saved from a blob).
        page.locator("li.job [data-link]").click()
        with page.expect_download() as info:
            page.get_by_role("button", name="Rejected records (CSV)").click()
        rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
        assert len(rows) - 1 == 333

        # Forgetting the key: the next call is refused and the form comes back.
        page.get_by_role("button", name="Forget API key").click()
        expect(panel).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('bulkport.apiKey')") is None

    # A new tab (a new context) starts without the key.
    for console in open_console(browser, srv.base, tmp_path):
        page = console.open("#/jobs")
        expect(page.locator("#key-panel")).to_be_visible()


def test_rate_limited_console_says_so(browser: Browser, pg_url: str, tmp_path: Path) -> None:
    # Two requests a minute, one saved up: the jobs page's second update is refused.
    limited = ServerProcess(pg_url, tmp_path / "data",
                            env={"BULKPORT_RATE_LIMIT_PER_MINUTE": "2",
                                 "BULKPORT_RATE_LIMIT_BURST": "1"}).start()
    try:
        for console in open_console(browser, limited.base, tmp_path):
            page = console.open("#/jobs")
            notice = page.locator("#notice")
            expect(notice).to_be_visible()
            expect(notice).to_contain_text("Too many requests (429 rate limited). Retry in")
            expect(page.locator("#key-panel")).to_be_hidden()
    finally:
        limited.stop()
