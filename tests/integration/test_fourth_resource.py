"""Adding a resource is one declaration plus one migration.

The test declares ``likes`` (a user likes an article once: natural key
``(user_id, article_id)``, two references), creates its table as its migration
would, registers it, and imports and exports it through the pipelines; no
product code knows about it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bulkport.config import Settings
from bulkport.pipeline.export.filesink import write_export
from bulkport.pipeline.export_spec import parse_spec
from bulkport.resources import RESOURCES
from bulkport.resources.base import Field, Kind, Resource
from bulkport.sql.loading import load_sql
from tests.conftest import get_job, run_jobs, submit_import

LIKES = Resource(
    name="likes",
    description="A user likes an article, once.",
    order=3,
    natural_key=("user_id", "article_id"),
    fields=(
        Field("id", Kind.ID),
        Field("user_id", Kind.REF, required=True, references="users", filterable=True),
        Field("article_id", Kind.REF, required=True, references="articles", filterable=True),
        Field("created_at", Kind.TIMESTAMP, insert_default="now()",
              update_default="t.created_at", filterable=True),
    ),
)

#: What the resource's migration would hold.
LIKES_DDL = """
CREATE TABLE likes (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id),
    article_id  text NOT NULL REFERENCES articles (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, article_id)
)
"""

USERS = "id,email,name,role\nu1,a@example.com,A,author\nu2,b@example.com,B,reader\n"
ARTICLES = ('{"id":"a1","slug":"one","title":"t","body":"b","author_id":"u1","status":"draft"}\n'
            '{"id":"a2","slug":"two","title":"t","body":"b","author_id":"u1","status":"draft"}\n')
KEY_CODE = "duplicate_user_id_article_id"
KEY_MESSAGE = "a record with this user_id and article_id already exists"


@pytest.fixture
def likes(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ``likes`` table and resource, with users u1, u2 and articles a1, a2 loaded."""
    with psycopg.connect(clean_db, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS likes")
        c.execute(LIKES_DDL)
    monkeypatch.setitem(RESOURCES, "likes", LIKES)
    try:
        yield clean_db
    finally:
        load_sql.cache_clear()
        with psycopg.connect(clean_db, autocommit=True) as c:
            c.execute("DROP TABLE likes")


def _parents(url: str, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text(USERS)
    (tmp_path / "articles.ndjson").write_text(ARTICLES)
    submit_import(url, settings, tmp_path / "users.csv", "users")
    submit_import(url, settings, tmp_path / "articles.ndjson", "articles")
    run_jobs(url, settings)


def _import(url: str, settings: Settings, path: Path, text: str, mode: str
            ) -> tuple[dict[str, Any], dict[int, list[dict[str, Any]]]]:
    path.write_text(text)
    job_id = submit_import(url, settings, path, "likes", mode=mode)
    run_jobs(url, settings)
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT row, errors FROM import_errors WHERE job_id = %s ORDER BY row",
                         (job_id,)).fetchall()
    return get_job(url, job_id), {r: errs for r, errs in rows}


def _stored(url: str) -> dict[tuple[str, str], str]:
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT user_id, article_id, created_at FROM likes").fetchall()
    return {(u, a): ts.isoformat() for u, a, ts in rows}


@pytest.mark.parametrize("batch_size", [2, 1000])
def test_likes_import_and_export(likes: str, settings: Settings, tmp_path: Path,
                                 batch_size: int) -> None:
    settings = settings.model_copy(update={"batch_size": batch_size})
    _parents(likes, settings, tmp_path)

    job, errors = _import(likes, settings, tmp_path / "l1.csv", (
        "user_id,article_id,created_at\n"
        "u1,a1,2024-01-01T00:00:00Z\n"      # 1 good
        "u1,a2,2024-01-02T00:00:00Z\n"      # 2 good
        "u1,a1,2024-01-03T00:00:00Z\n"      # 3 repeats record 1: first wins
        "u2,nope,2024-01-04T00:00:00Z\n"    # 4 no such article
        "ghost,a1,2024-01-05T00:00:00Z\n"   # 5 no such user
        "u2,a1,2024-01-06T00:00:00Z\n"      # 6 good
        "u2,,2024-01-07T00:00:00Z\n"),      # 7 article_id missing
        "insert")
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 3, 4)
    assert {row: [e["code"] for e in errs] for row, errs in errors.items()} == {
        3: [KEY_CODE], 4: ["invalid_article_id"], 5: ["invalid_user_id"],
        7: ["article_id_required"]}
    assert errors[3] == [{"field": "user_id,article_id",
                          "value": {"user_id": "u1", "article_id": "a1"},
                          "code": KEY_CODE, "message": KEY_MESSAGE}]
    assert errors[4][0]["value"] == "nope"
    assert _stored(likes) == {("u1", "a1"): "2024-01-01T00:00:00+00:00",
                              ("u1", "a2"): "2024-01-02T00:00:00+00:00",
                              ("u2", "a1"): "2024-01-06T00:00:00+00:00"}

    # A key stored by the earlier job: the database says it is taken.
    job, errors = _import(likes, settings, tmp_path / "l2.csv",
                          "user_id,article_id\nu2,a1\nu2,a2\n", "insert")
    assert (job["successful_records"], job["error_records"]) == (1, 1)
    assert {row: [e["code"] for e in errs] for row, errs in errors.items()} == {1: [KEY_CODE]}
    assert _stored(likes)[("u2", "a1")] == "2024-01-06T00:00:00+00:00"
    new_like = _stored(likes)[("u2", "a2")]

    # Upsert: matched by the composite key; a repeat in the file updates (last wins).
    job, errors = _import(likes, settings, tmp_path / "l3.csv", (
        "user_id,article_id,created_at\n"
        "u1,a1,2025-01-01T00:00:00Z\n"      # 1 updates the stored like
        "u1,a2,\n"                          # 2 empty created_at: keeps the stored value
        "u2,a2,2025-03-01T00:00:00Z\n"      # 3 updates the like job 2 wrote
        "u2,a2,2025-04-01T00:00:00Z\n"      # 4 repeats record 3: last wins
        "u1,zzz,2025-05-01T00:00:00Z\n"),   # 5 no such article
        "upsert")
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 4, 1)
    assert {row: [e["code"] for e in errs] for row, errs in errors.items()} == {
        5: ["invalid_article_id"]}
    assert new_like != "2025-04-01T00:00:00+00:00"
    assert _stored(likes) == {("u1", "a1"): "2025-01-01T00:00:00+00:00",
                              ("u1", "a2"): "2024-01-02T00:00:00+00:00",
                              ("u2", "a1"): "2024-01-06T00:00:00+00:00",
                              ("u2", "a2"): "2025-04-01T00:00:00+00:00"}

    # Export: every field by default, filters from the declaration.
    with psycopg.connect(likes) as c:
        out = io.BytesIO()
        spec = parse_spec("likes", "ndjson", None, {"user_id": "u1"})
        assert write_export(c, spec, out)[0] == 2
        records = [orjson.loads(line) for line in out.getvalue().splitlines()]
        csv_out = io.BytesIO()
        write_export(c, parse_spec("likes", "csv", "user_id,article_id,created_at", {}), csv_out)
    assert sorted((r["user_id"], r["article_id"], r["created_at"]) for r in records) == [
        ("u1", "a1", "2025-01-01T00:00:00Z"), ("u1", "a2", "2024-01-02T00:00:00Z")]
    assert all(set(r) == {"id", "user_id", "article_id", "created_at"} for r in records)
    lines = csv_out.getvalue().decode().splitlines()
    assert lines[0] == "user_id,article_id,created_at"
    assert sorted(lines[1:]) == ["u1,a1,2025-01-01T00:00:00Z", "u1,a2,2024-01-02T00:00:00Z",
                                 "u2,a1,2024-01-06T00:00:00Z", "u2,a2,2025-04-01T00:00:00Z"]
