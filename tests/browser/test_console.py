"""The web console in a real headless Chromium against a real ``bulkport serve`` process.

One server per module (small batches, so that jobs take several updates); each test
empties the tables it relies on first, so the tests do not depend on their order.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect

from bulkport.gen import GenConfig, build_mix, generate
from tests.browser.conftest import Console, open_console
from tests.conftest import USERS_HUGE, ServerProcess, empty_tables

pytestmark = pytest.mark.e2e

HUGE_CODES = {"invalid_email_format": 201, "invalid_role": 167, "duplicate_email": 33}
#: Upload speed the browser is held to (bytes/s), so the upload bar has several steps.
UPLOAD_BYTES_PER_SEC = 600_000


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("console") / "data",
                           env={"BULKPORT_BATCH_SIZE": "1000"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def console(browser: Browser, srv: ServerProcess, tmp_path: Path) -> Iterator[Console]:
    yield from open_console(browser, srv.base, tmp_path)


@pytest.fixture
def empty(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as c:
        empty_tables(c)
    return pg_url


def upload_huge(srv: ServerProcess) -> str:
    with srv.client() as c, USERS_HUGE.open("rb") as f:
        r = c.post("/v1/imports", data={"resource": "users"},
                   files={"file": ("users_huge.csv", f, "text/csv")})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    srv.wait_job(job_id)
    return job_id


def job_id_of(page: Page, kind: str) -> str:
    expect(page).to_have_url(re.compile(rf"#/{kind}/[\w-]+$"))
    return page.url.rsplit("/", 1)[1]


def counter(page: Page, name: str) -> str:
    return page.locator(f"dl.counters dt:text-is('{name}') + dd").inner_text()


def test_import_page_uploads_and_shows_the_job(console: Console, srv: ServerProcess,
                                               empty: str) -> None:
    page = console.open("#/import")
    console.shot("import-page")
    # Hold the upload to a known speed: on loopback it would finish in one progress event.
    cdp = console.context.new_cdp_session(page)
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": UPLOAD_BYTES_PER_SEC})
    page.get_by_label("File").set_input_files(USERS_HUGE)
    page.get_by_label("Resource").select_option("users")
    page.get_by_label("Mode").select_option("insert")
    page.get_by_role("button", name="Start import").click()
    job_id = job_id_of(page, "imports")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    upload = console.bars("Upload")
    assert any(0 < v < 100 for v in upload), f"the upload bar never moved: {upload}"
    assert upload == sorted(upload)
    texts: list[str] = page.evaluate("window.__uploadTexts")
    pattern = re.compile(r"[\d.]+ (B|KB|MB) of 1\.2 MB uploaded · [\d.]+ (B|KB|MB)/s")
    assert any(pattern.fullmatch(t) for t in texts), texts

    expect(page.locator(".title-row .badge")).to_have_text("completed with errors")
    expect(page.get_by_role("progressbar", name="Progress")).to_have_attribute(
        "aria-valuenow", "100")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.get_by_role("button", name="Forget API key")).to_be_hidden()
    assert counter(page, "Successful") == "9,667"
    assert counter(page, "Rejected") == "333"
    groups = page.locator("[data-groups] tr")
    expect(groups).to_have_count(3)
    seen = {groups.nth(i).locator("td.code").inner_text():
            int(groups.nth(i).locator("td.num").inner_text().replace(",", ""))
            for i in range(3)}
    assert seen == HUGE_CODES
    console.shot("job-page")

    # The rejected records as CSV: 333 data rows, the original columns first.
    with page.expect_download() as info:
        page.get_by_role("button", name="Rejected records (CSV)").click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0][:7] == ["id", "email", "name", "role", "active", "created_at", "updated_at"]
    assert len(rows) - 1 == 333

    # The error table, filtered by code through the group's button, pages of 50.
    page.get_by_role("button", name="Show invalid_role errors").click()
    cells = page.locator("[data-errors] td.code")
    expect(cells.filter(has_not_text="invalid_role")).to_have_count(0)
    expect(cells).to_have_count(50)
    expect(page.get_by_label("Code")).to_have_value("invalid_role")
    for n in (2, 3, 4):
        page.get_by_role("button", name="Next").click()
        expect(page.get_by_text(f"Page {n}", exact=True)).to_be_visible()
    expect(page.locator("[data-errors] tr")).to_have_count(167 - 150)
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    page.get_by_role("button", name="Previous").click()
    expect(page.get_by_text("Page 3", exact=True)).to_be_visible()
    expect(cells).to_have_count(50)

    # "Import the fixed file" returns to the import page with the same choices.
    page.get_by_role("link", name="Import the fixed file").click()
    expect(page.get_by_label("Resource")).to_have_value("users")
    expect(page.get_by_label("Mode")).to_have_value("insert")
    assert job_id


def test_job_page_at_400px(browser: Browser, srv: ServerProcess, empty: str,
                           tmp_path: Path) -> None:
    job_id = upload_huge(srv)
    for console in open_console(browser, srv.base, tmp_path,
                                viewport={"width": 400, "height": 900}):
        page = console.open(f"#/imports/{job_id}")
        expect(page.locator("[data-groups] tr")).to_have_count(3)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at 400 px ({width} px wide)"
        console.shot("job-page-400px")
        # Keyboard: Tab reaches the download button and shows a visible focus ring.
        button = page.get_by_role("button", name="Rejected records (CSV)")
        button.focus()
        outline = button.evaluate("b => getComputedStyle(b).outlineStyle")
        assert outline != "none"


def test_export_two_fields_one_filter(console: Console, srv: ServerProcess, empty: str) -> None:
    upload_huge(srv)
    with psycopg.connect(empty) as c:
        expected = [(str(i), e) for i, e in c.execute(
            "SELECT id, email FROM users WHERE role = 'admin' ORDER BY id")]
    assert len(expected) > 100
    page = console.open("#/export")
    page.get_by_label("Resource").select_option("users")
    page.get_by_label("Format").select_option("csv")
    page.get_by_role("button", name="Select none").click()
    page.get_by_label("id", exact=True).check()
    page.get_by_label("email", exact=True).check()
    page.get_by_label("role is").select_option("admin")
    console.shot("export-page")

    with page.expect_download() as info:
        page.get_by_role("button", name="Download now").click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0] == ["id", "email"]
    assert [tuple(r) for r in rows[1:]] == expected
    expect(page.locator("[data-status]")).to_contain_text("Downloaded")

    # The same export as a job: its page, then its file.
    page.get_by_role("button", name="Start export job").click()
    job_id_of(page, "exports")
    expect(page.locator(".title-row .badge")).to_have_text("completed")
    assert counter(page, "Records") == f"{len(expected):,}"
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert [tuple(r) for r in rows[1:]] == expected
    console.shot("export-job-page")


def test_cancel_a_running_job(console: Console, srv: ServerProcess, empty: str,
                              tmp_path: Path) -> None:
    generate(GenConfig(out_dir=tmp_path / "gen", seed=7, users=200_000, articles=0, comments=0,
                       mix=build_mix(0)))
    with srv.client() as c, (tmp_path / "gen" / "users.csv").open("rb") as f:
        r = c.post("/v1/imports", data={"resource": "users"},
                   files={"file": ("users.csv", f, "text/csv")})
    job_id = r.json()["job_id"]

    # The jobs page lists it, newest first, with a live bar; its link opens the job page.
    page = console.open("#/jobs")
    item = page.locator("li.job").first
    expect(item.locator("[data-link]")).to_have_attribute("href", f"#/imports/{job_id}")
    expect(item.get_by_role("button", name="Cancel")).to_be_visible()
    console.shot("jobs-page")
    item.locator("[data-link]").click()

    # The job page: the bar moves and the rows/s chart is drawn while the job runs.
    expect(page.locator("[data-chart]")).to_be_visible()
    points = page.locator("[data-chart] polyline").get_attribute("points") or ""
    assert len(points.split()) >= 2
    page.wait_for_function(
        "() => new Set((window.__bars['Progress'] || []).filter(v => v > 0 && v < 100)).size >= 2")
    console.shot("job-page-running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".title-row .badge")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    job = srv.wait_job(job_id)
    assert job["status"] == "cancelled"
    assert job["processed_records"] < 200_000


def test_docs_render_offline(console: Console) -> None:
    page = console.open("docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    assert any("/console/static/vendor/swagger-ui" in u for u in console.requests)
    console.shot("docs")


def test_every_page_stays_on_this_host(console: Console, srv: ServerProcess) -> None:
    # /docs is checked by test_docs_render_offline (and every test's guard).
    for fragment, ready in (("#/import", "Start import"), ("#/jobs", None),
                            ("#/export", "Download now")):
        page = console.open(fragment)
        if ready:
            expect(page.get_by_role("button", name=ready)).to_be_visible()
        else:
            page.wait_for_function("() => performance.getEntriesByType('resource')"
                                   ".some(e => e.name.includes('/v1/imports?'))")
    assert len(console.requests) >= 8
    assert console.off_host() == []
    # The guard does see a request to another host (and stops it in the browser).
    page.evaluate("fetch('http://guard-check.invalid/x').catch(() => null)")
    page.wait_for_timeout(200)
    assert console.off_host() == ["http://guard-check.invalid/x"]
    console.requests.clear()


#: Rows of the semicolon-separated users file whose role is not allowed (1-based).
BAD_ROLE_ROWS = (3, 7)


def semicolon_users(path: Path, rows: int = 50) -> list[str]:
    """A spreadsheet-style users file (`E-mail;Full Name;Role`); returns the valid emails."""
    lines = ["E-mail;Full Name;Role"]
    valid = []
    for i in range(1, rows + 1):
        role = "wizard" if i in BAD_ROLE_ROWS else ("admin", "author", "reader")[i % 3]
        lines.append(f"user{i}@example.com;User {i};{role}")
        if i not in BAD_ROLE_ROWS:
            valid.append(f"user{i}@example.com")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return valid


def test_mapping_step_maps_columns_and_imports(console: Console, srv: ServerProcess,
                                               empty: str, tmp_path: Path) -> None:
    valid = semicolon_users(tmp_path / "people.csv")
    page = console.open("#/import")
    page.get_by_label("Resource").select_option("users")
    page.get_by_label("Encoding").select_option("utf-8")
    page.get_by_label("File").set_input_files(tmp_path / "people.csv")

    # The preview: the delimiter detected, E-mail and Full Name feed nothing yet.
    missing = page.locator("[data-missing]")
    expect(missing).to_contain_text("email, name")
    detected = page.locator("[data-detected]")
    expect(detected.locator("dt:text-is('Delimiter') + dd")).to_have_text("; (semicolon)")
    expect(detected.locator("dt:text-is('Encoding') + dd")).to_have_text("utf-8")
    expect(page.get_by_label("Field for E-mail")).to_have_value("")
    expect(page.get_by_label("Field for Full Name")).to_have_value("")
    expect(page.get_by_label("Field for Role")).to_have_value("role")
    records = page.locator("[data-records] tr")
    expect(records).to_have_count(20)
    expect(records.filter(has_text="email_required")).to_have_count(20)

    page.get_by_label("Field for E-mail").select_option("email")
    page.get_by_label("Field for Full Name").focus()
    page.get_by_label("Field for Full Name").select_option("name")
    expect(missing).to_be_hidden()
    expect(records.filter(has_text="_required")).to_have_count(0)
    bad = records.filter(has_text="invalid_role")
    expect(bad).to_have_count(len(BAD_ROLE_ROWS))
    assert [int(bad.nth(i).locator("td.num").inner_text())
            for i in range(bad.count())] == list(BAD_ROLE_ROWS)
    expect(records.locator("td.ok")).to_have_count(20 - len(BAD_ROLE_ROWS))
    # The re-run preview reports the map, and the select keeps its focus.
    expect(page.locator("[data-columns] tr", has_text="Full Name")).to_contain_text("column map")
    expect(page.get_by_label("Field for Full Name")).to_be_focused()
    console.shot("mapping-step", full_page=True)

    page.get_by_role("button", name="Start import").click()
    job_id = job_id_of(page, "imports")
    expect(page.locator(".title-row .badge")).to_have_text("completed with errors")
    assert counter(page, "Successful") == str(len(valid))
    assert counter(page, "Rejected") == str(len(BAD_ROLE_ROWS))
    job = srv.wait_job(job_id)
    assert job["column_map"] == {"E-mail": "email", "Full Name": "name"}
    assert (job["delimiter"], job["encoding"]) == (";", "utf-8")
    with psycopg.connect(empty) as c:
        stored = c.execute("SELECT email, name FROM users ORDER BY email").fetchall()
    assert sorted(e for e, _ in stored) == sorted(valid)
    assert ("user1@example.com", "User 1") in stored


def test_mapping_step_at_400px_and_the_422(browser: Browser, srv: ServerProcess, empty: str,
                                           tmp_path: Path) -> None:
    semicolon_users(tmp_path / "people.csv")
    for console in open_console(browser, srv.base, tmp_path,
                                viewport={"width": 400, "height": 900}):
        page = console.open("#/import")
        page.get_by_label("File").set_input_files(tmp_path / "people.csv")
        expect(page.locator("[data-missing]")).to_contain_text("email, name")
        expect(page.get_by_label("Field for Role")).to_have_value("role")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at 400 px ({width} px wide)"
        # Keyboard: Tab reaches the column selects.
        page.get_by_label("Dry run").focus()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_label("Field for E-mail")).to_be_focused()
        # Started unmapped, the import is refused with the API's message and a map.
        page.get_by_role("button", name="Start import").click()
        error = page.locator("[data-error]")
        expect(error).to_contain_text("no column for the required field")
        expect(error).to_contain_text("Suggested mapping:")
        expect(page).to_have_url(re.compile(r"#/import$"))
        console.shot("mapping-step-400px")
        # Two columns onto one field: the preview's 400 is shown under the mapping.
        page.get_by_label("Field for E-mail").select_option("email")
        page.get_by_label("Field for Full Name").select_option("email")
        expect(page.locator("[data-preview-error]")).to_contain_text(
            "map one column per field")
    with psycopg.connect(empty) as c:
        assert c.execute("SELECT count(*) FROM import_jobs").fetchone() == (0,)
