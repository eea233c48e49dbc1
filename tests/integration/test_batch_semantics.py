"""Records apply in file order: the outcome never depends on the batch size."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bulkport.config import Settings
from tests.conftest import get_job, run_jobs, submit_import

USERS = "id,email,name,role\nu1,a@example.com,A,author\nu2,b@example.com,B,reader\n"


def _articles(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _article(slug: str, author: str, title: str) -> dict[str, object]:
    return {"slug": slug, "title": title, "body": "b", "author_id": author, "status": "draft"}


def _codes(conn, job_id: str) -> dict[int, list[str]]:
    rows = conn.execute("SELECT row, errors FROM import_errors WHERE job_id = %s ORDER BY row",
                        (job_id,)).fetchall()
    return {r: [e["code"] for e in errs] for r, errs in rows}


@pytest.mark.parametrize("mode", ["insert", "upsert"])
@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_repeat_of_a_rejected_record_is_not_a_duplicate(
    clean_db: str, settings: Settings, conn, tmp_path: Path, mode: str, batch_size: int,
) -> None:
    settings = settings.model_copy(update={"batch_size": batch_size})
    users = tmp_path / "users.csv"
    users.write_text(USERS)
    submit_import(clean_db, settings, users, "users")
    path = _articles(tmp_path / "a.ndjson", [
        _article("first", "nobody", "rejected: unknown author"),
        _article("first", "u1", "accepted: its twin was rejected"),
        _article("first", "u2", "repeat of an accepted record"),
        _article("second", "u2", "accepted"),
    ])
    job_id = submit_import(clean_db, settings, path, "articles", mode=mode)
    run_jobs(clean_db, settings)
    job = get_job(clean_db, job_id)
    if mode == "insert":
        assert _codes(conn, job_id) == {1: ["invalid_author_id"], 3: ["duplicate_slug"]}
        assert (job["successful_records"], job["error_records"]) == (2, 2)
        expected_author = "u1"
    else:  # the third record updates the row the second wrote
        assert _codes(conn, job_id) == {1: ["invalid_author_id"]}
        assert (job["successful_records"], job["error_records"]) == (3, 1)
        expected_author = "u2"
    stored = conn.execute("SELECT author_id FROM articles WHERE slug = 'first'").fetchall()
    assert stored == [(expected_author,)]
    assert conn.execute("SELECT count(*) FROM articles").fetchone()[0] == 2


def test_cross_field_rule_is_reported_with_the_other_problems(
    clean_db: str, settings: Settings, conn, tmp_path: Path,
) -> None:
    users = tmp_path / "users.csv"
    users.write_text(USERS)
    submit_import(clean_db, settings, users, "users")
    record = {**_article("Not A Slug", "u1", "t"), "published_at": "2024-01-01T00:00:00Z"}
    job_id = submit_import(clean_db, settings, _articles(tmp_path / "a.ndjson", [record]),
                           "articles")
    run_jobs(clean_db, settings)
    assert _codes(conn, job_id) == {1: ["invalid_slug_format", "draft_cannot_have_published_at"]}


# --- upserts that swap keys: every record sees the records before it ----------------------

#: Stored users x (email xa) and y (email ya); the file moves x to a free email, gives
#: y the email x just freed, then gives x the email y just freed.
SWAP_STORED = [("x", "xa@example.com"), ("y", "ya@example.com")]
SWAP_FILE = [{"id": "x", "email": "tmp@example.com"}, {"id": "y", "email": "xa@example.com"},
             {"id": "x", "email": "ya@example.com"}]


def _seed(conn, users: list[tuple[str, str]]) -> None:
    conn.execute("TRUNCATE import_errors, jobs, comments, articles, users CASCADE")
    for uid, email in users:
        conn.execute("INSERT INTO users (id, email, name, role) VALUES (%s, %s, 'n', 'admin')",
                     (uid, email))


def _run_file(url: str, settings: Settings, conn, tmp_path: Path, stored: list[tuple[str, str]],
              records: list[dict[str, object]], mode: str, batch_size: int
              ) -> tuple[object, ...]:
    """Import ``records`` over ``stored`` users; return everything the outcome consists of."""
    _seed(conn, stored)
    path = tmp_path / f"users-{batch_size}.ndjson"
    path.write_bytes(b"".join(orjson.dumps({"name": f"r{i + 1}", "role": "admin", **r}) + b"\n"
                              for i, r in enumerate(records)))
    job_id = submit_import(url, settings.model_copy(update={"batch_size": batch_size}), path,
                           "users", mode=mode)
    run_jobs(url, settings.model_copy(update={"batch_size": batch_size}))
    job = get_job(url, job_id)
    table = conn.execute(
        "SELECT CASE WHEN id ~ '^[0-9a-f-]{36}$' THEN '<generated>' ELSE id END, email, name"
        " FROM users ORDER BY lower(email)").fetchall()
    return (job["status"], job["successful_records"], job["error_records"],
            job["error_counts"], _codes(conn, job_id), table)


@pytest.mark.parametrize("batch_size", [2, 3, 5000])
def test_key_swapping_upsert_does_not_depend_on_the_batch_size(
    clean_db: str, settings: Settings, conn, tmp_path: Path, batch_size: int,
) -> None:
    one = _run_file(clean_db, settings, conn, tmp_path, SWAP_STORED, SWAP_FILE, "upsert", 1)
    assert one[:5] == ("completed", 3, 0, {}, {})
    assert one[5] == [("y", "xa@example.com", "r2"), ("x", "ya@example.com", "r3")]
    assert _run_file(clean_db, settings, conn, tmp_path, SWAP_STORED, SWAP_FILE, "upsert",
                     batch_size) == one


#: Few distinct values, so that records collide: ids, and emails (one in two cases).
IDS = st.sampled_from(["a", "b", "c", None])
EMAILS = st.sampled_from(["e1@x.io", "e2@x.io", "E2@x.io", "e3@x.io", "bad"])
#: Examples per run (raise it to search harder: BULKPORT_BATCH_EXAMPLES=500).
EXAMPLES = int(os.environ.get("BULKPORT_BATCH_EXAMPLES", "40"))


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[dict[str, object]]]:
    """Stored users (unique ids and emails) and an upsert/insert file over them."""
    ids = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, min_size=1, max_size=3))
    emails = draw(st.permutations(["e1@x.io", "e2@x.io", "e3@x.io"]))[: len(ids)]
    records = []
    for _ in range(draw(st.integers(2, 7))):
        rid, email = draw(IDS), draw(EMAILS)
        records.append({"email": email} if rid is None else {"id": rid, "email": email})
    return list(zip(ids, emails, strict=True)), records


@hsettings(max_examples=EXAMPLES, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=_scenario(), mode=st.sampled_from(["insert", "upsert"]),
       batch_size=st.sampled_from([2, 3, 5000]))
def test_outcome_is_that_of_one_record_per_batch(
    clean_db: str, settings: Settings, conn, tmp_path: Path,
    scenario: tuple[list[tuple[str, str]], list[dict[str, object]]], mode: str, batch_size: int,
) -> None:
    stored, records = scenario
    one = _run_file(clean_db, settings, conn, tmp_path, stored, records, mode, 1)
    assert _run_file(clean_db, settings, conn, tmp_path, stored, records, mode,
                     batch_size) == one
