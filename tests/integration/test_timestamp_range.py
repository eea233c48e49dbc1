"""Timestamps outside the years 0001-9999 in UTC are refused, so every stored one round-trips.

PostgreSQL stores ``0001-01-01T00:00:00+14:00`` (year 0 in UTC) and
``9999-12-31T23:59:59-14:00`` (year 10000) without complaint; their export
(``0001-12-31T10:00:00 BC``, ``10000-01-01T…``) then fails to import back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkport.config import Settings
from bulkport.resources import RESOURCES
from bulkport.resources.compile import compile_validator
from bulkport.resources.fastcsv import compile_fast_csv
from tests.conftest import get_job, run_jobs, submit_import
from tests.export_data import export_bytes

OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                "0001-01-01T13:59:59.999999+14:00", "9999-12-31T10:00:00-14:00"]
#: The edges that are inside the range, in several spellings.
EDGES = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00-14:00",
         "9999-12-31T23:59:59+14:00", "0001-01-01T14:00:00+14:00", "9999-12-31T23:59:59"]


def _codes(conn: Any, job_id: str) -> dict[int, list[str]]:
    rows = conn.execute("SELECT row, errors FROM import_errors WHERE job_id = %s ORDER BY row",
                        (job_id,)).fetchall()
    return {r: [e["code"] for e in errs] for r, errs in rows}


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_out_of_range_user_timestamps_are_field_errors(
    clean_db: str, settings: Settings, conn: Any, tmp_path: Path, field: str, fmt: str,
) -> None:
    records = [{"email": f"u{i}@example.com", "name": "U", "role": "admin", field: ts}
               for i, ts in enumerate([*OUT_OF_RANGE, "2024-01-01T00:00:00Z"])]
    path = tmp_path / f"users.{fmt}"
    if fmt == "csv":
        path.write_text(f"email,name,role,{field}\n" + "".join(
            f"{r['email']},{r['name']},{r['role']},{r[field]}\n" for r in records))
    else:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    job_id = submit_import(clean_db, settings, path, "users")
    run_jobs(clean_db, settings)
    job = get_job(clean_db, job_id)
    assert job["status"] == "completed_with_errors", job["failure_reason"]
    assert _codes(conn, job_id) == {i + 1: [f"invalid_{field}"] for i in range(len(OUT_OF_RANGE))}
    assert (job["successful_records"], job["error_records"]) == (1, len(OUT_OF_RANGE))


def test_out_of_range_published_at_is_a_field_error(
    clean_db: str, settings: Settings, conn: Any, tmp_path: Path,
) -> None:
    users = tmp_path / "users.csv"
    users.write_text("id,email,name,role\nu1,a@example.com,A,author\n")
    submit_import(clean_db, settings, users, "users")
    path = tmp_path / "articles.ndjson"
    path.write_bytes(b"".join(orjson.dumps({
        "slug": f"a-{i}", "title": "T", "body": "B", "author_id": "u1", "status": "published",
        "published_at": ts}) + b"\n" for i, ts in enumerate(OUT_OF_RANGE)))
    job_id = submit_import(clean_db, settings, path, "articles")
    run_jobs(clean_db, settings)
    assert _codes(conn, job_id) == {i + 1: ["invalid_published_at"]
                                    for i in range(len(OUT_OF_RANGE))}


def test_both_validators_refuse_or_defer(tmp_path: Path) -> None:
    """The CSV fast path never accepts what the general validator refuses."""
    columns = ["email", "name", "role", "created_at"]
    fast = compile_fast_csv(RESOURCES["users"], columns)
    general = compile_validator(RESOURCES["users"], columns)
    assert fast is not None
    for ts in [*OUT_OF_RANGE, "0000-12-31T23:59:59Z", "10000-01-01T00:00:00Z"]:
        line = f"a@example.com,A,admin,{ts}"
        assert fast(line) is None, ts
        _, problems = general(line.split(","))
        assert problems is not None and [p.code for p in problems] == ["invalid_created_at"], ts


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_edge_timestamps_export_and_import_back(
    clean_db: str, settings: Settings, conn: Any, tmp_path: Path, fmt: str,
) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,email,name,role,created_at\n" + "".join(
        f"u{i},u{i}@example.com,U,admin,{ts}\n" for i, ts in enumerate(EDGES)))
    job_id = submit_import(clean_db, settings, path, "users")
    run_jobs(clean_db, settings)
    assert get_job(clean_db, job_id)["status"] == "completed"
    stored = conn.execute("SELECT id, created_at FROM users ORDER BY id").fetchall()
    exported = tmp_path / f"export.{fmt}"
    exported.write_bytes(export_bytes(clean_db, "users", fmt))
    conn.execute("TRUNCATE users CASCADE")
    again = submit_import(clean_db, settings, exported, "users")
    run_jobs(clean_db, settings)
    job = get_job(clean_db, again)
    assert job["status"] == "completed", (job["failure_reason"], _codes(conn, again))
    assert conn.execute("SELECT id, created_at FROM users ORDER BY id").fetchall() == stored
