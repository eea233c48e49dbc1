"""Records apply in file order: the outcome never depends on the batch size."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

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
