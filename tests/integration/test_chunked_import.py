"""A split import ends exactly as one stream does, whatever the number of workers.

A generated users file (5% flaws) plus in-file repeats that cross chunk
boundaries (same email in another case, same id, a repeat whose first record is
rejected, chains of them) is imported as one stream and then split into small
chunks run by 1, 2 and 4 workers of the real worker loop on the real
PostgreSQL. The rejected-records downloads (CSV and NDJSON, byte for byte),
every counter and the table contents are the same. Upserts are not split and
end the same with any number of workers too. A cancel stops every chunk.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bulkport import db
from bulkport.config import Settings
from bulkport.gen import GenConfig, build_mix, generate
from bulkport.jobs import service
from bulkport.pipeline.rejects import csv_download
from bulkport.status import JobKind
from tests.conftest import empty_tables, get_job, submit_import, worker_threads

COUNTERS = ("status", "total_records", "processed_records", "successful_records",
            "error_records", "failed_batches", "error_counts", "failure_reason",
            "bytes_processed", "format", "delimiter", "columns")
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
CHUNK_BYTES = 12 * 1024


def repeats_file(tmp_path: Path, users: int = 2500, seed: int = 7) -> Path:
    """The generator's users (5% flaws) with repeats of earlier records far later."""
    generate(GenConfig(out_dir=tmp_path / "gen", seed=seed, users=users, articles=0,
                       comments=0, mix=build_mix(0.05)))
    with (tmp_path / "gen" / "users.csv").open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    rng = random.Random(seed)
    email, name, role = header.index("email"), header.index("name"), header.index("role")
    out = list(rows)
    for n in range(120):
        src = rows[rng.randrange(len(rows) // 2)]
        twin = list(src)
        kind = n % 4
        if kind == 0:  # the same email in another case: duplicate_email (or first to load)
            twin[0], twin[email] = f"twin{n}", src[email].upper()
        elif kind == 1:  # the same id with another email
            twin[email] = f"other{n}@example.org"
        elif kind == 2:  # first record rejected (bad role) then a valid repeat: it loads
            bad = list(src)
            bad[0], bad[email], bad[role] = f"bad{n}", f"late{n}@example.org", "nobody"
            out.insert(rng.randrange(len(out) // 3), bad)
            twin[0], twin[email] = f"late{n}", f"late{n}@example.org"
        else:  # a chain: a repeat of a repeat, with a quoted newline in its name
            twin[0], twin[email] = f"chain{n}", src[email]
            twin[name] = "Line one\nline two"
            out.insert(rng.randrange(len(out) // 2, len(out)), list(twin))
            twin = list(twin)
            twin[email] = f"chain{n}@example.org"
        out.insert(rng.randrange(len(out) // 2, len(out) + 1), twin)
    path = tmp_path / "users_repeats.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(out)
    return path


def to_ndjson(src: Path, dst: Path) -> Path:
    with src.open(newline="") as f, dst.open("wb") as out:
        for i, rec in enumerate(csv.DictReader(f)):
            out.write(orjson.dumps({k: v for k, v in rec.items() if v != ""}) + b"\n")
            if i % 50 == 0:
                out.write(b"\n")  # blank lines are not records
    return dst


def run_workers(url: str, settings: Settings, count: int, job_id: str,
                timeout: float = 240) -> None:
    """``count`` workers of the real worker loop, in threads, until the job ended."""
    deadline = time.monotonic() + timeout
    with worker_threads(settings, url, count):
        while get_job(url, job_id)["status"] not in TERMINAL:
            assert time.monotonic() < deadline, "the import did not end"
            time.sleep(0.1)


def downloads(url: str, job_id: str) -> tuple[bytes, bytes]:
    """The rejected-records downloads as the API streams them: CSV and NDJSON."""
    with db.connect(url, autocommit=True) as c:
        job = service.get(c, JobKind.IMPORT, job_id)
        rows = service.import_errors(c, job_id, after_row=0, limit=10**9)
    ndjson = b"".join(orjson.dumps({"row": r["row"], "record": r["record"],
                                    "errors": r["errors"]}) + b"\n" for r in rows)
    return b"".join(csv_download(job, iter(rows))), ndjson


def table(conn: psycopg.Connection[Any], file_ids: set[str]) -> list[tuple[Any, ...]]:
    """The users rows in a stable order; generated ids and default timestamps named."""
    rows = conn.execute(
        "SELECT id, lower(email), email, name, role, active, created_at::text,"
        " updated_at::text, created_at > now() - interval '1 hour' FROM users"
        " ORDER BY lower(email)").fetchall()
    return [(r[0] if r[0] in file_ids else "<generated>", *r[1:6],
             "<default>" if r[8] else r[6], "<default>" if r[8] else r[7]) for r in rows]


def one_run(url: str, settings: Settings, path: Path, workers: int, *, mode: str = "insert",
            fmt: str | None = None, prepare: Callable[[psycopg.Connection[Any]], None]
            | None = None) -> dict[str, Any]:
    with db.connect(url, autocommit=True) as c:
        empty_tables(c, ("users", "jobs"))
        if prepare:
            prepare(c)
    job_id = submit_import(url, settings, path, "users", mode=mode, fmt=fmt)
    run_workers(url, settings, workers, job_id)
    job = get_job(url, job_id)
    with db.connect(url, autocommit=True) as c:
        ids = {r[0] for r in c.execute("SELECT id FROM users")}
        file_ids = ids - {i for i in ids if len(i) == 36 and i.count("-") == 4}
        chunks = c.execute("SELECT count(*), count(DISTINCT owner), sum(held)"
                           " FROM import_chunks WHERE job_id = %s", (job_id,)).fetchone()
        defaults = c.execute("SELECT count(DISTINCT created_at) FROM users"
                             " WHERE created_at > now() - interval '1 hour'").fetchone()
        rows = table(c, file_ids)
    assert chunks is not None and defaults is not None
    return {"job": {k: job[k] for k in COUNTERS}, "downloads": downloads(url, job_id),
            "table": rows, "chunks": chunks[0], "owners": chunks[1], "held": chunks[2] or 0,
            "default_values": defaults[0]}


def stored_twin(conn: psycopg.Connection[Any]) -> None:
    """A row stored before the import, whose email the file repeats."""
    conn.execute("INSERT INTO users (id, email, name, role) SELECT 'stored', "
                 "'STORED@example.org', 'Stored', 'admin'")


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_split_import_equals_one_stream(clean_db: str, settings: Settings, tmp_path: Path,
                                        fmt: str) -> None:
    path = repeats_file(tmp_path)
    if fmt == "ndjson":
        path = to_ndjson(path, tmp_path / "users_repeats.ndjson")
    with path.open("ab") as f:  # the stored row's email, far into the file
        f.write(b"late-stored,stored@EXAMPLE.org,Late,admin,true,,\n" if fmt == "csv" else
                b'{"id": "late-stored", "email": "stored@EXAMPLE.org", "name": "Late",'
                b' "role": "admin"}\n')
    base = settings.model_copy(update={"batch_size": 97, "chunk_bytes": CHUNK_BYTES})
    one = one_run(clean_db, base.model_copy(update={"split_min_bytes": 0}), path, 1,
                  prepare=stored_twin)
    assert one["chunks"] == 0
    job = one["job"]
    assert job["status"] == "completed_with_errors"
    codes = job["error_counts"]
    assert codes["duplicate_email"] > 30 and codes["duplicate_id"] > 20, codes
    assert codes["invalid_role"] > 30, codes
    for workers in (1, 2, 4):
        got = one_run(clean_db, base.model_copy(update={"split_min_bytes": 1}), path,
                      workers, prepare=stored_twin)
        assert got["chunks"] > 10, "the file was split"
        assert got["held"] > 50, "repeats across chunks were held for the tail"
        if workers > 1:
            assert got["owners"] > 1, "chunks ran on several workers"
        assert got["default_values"] == one["default_values"] == 1
        assert got["job"] == job, workers
        csv_bytes, ndjson_bytes = got["downloads"]
        assert csv_bytes == one["downloads"][0], workers
        assert ndjson_bytes == one["downloads"][1], workers
        assert got["table"] == one["table"], workers


def test_upserts_are_one_stream_with_any_number_of_workers(
        clean_db: str, settings: Settings, tmp_path: Path) -> None:
    path = repeats_file(tmp_path, users=1200)
    base = settings.model_copy(update={"batch_size": 97, "chunk_bytes": CHUNK_BYTES,
                                       "split_min_bytes": 1})
    first = one_run(clean_db, base, path, 1, mode="upsert")
    assert first["chunks"] == 0
    for workers in (2, 4):
        got = one_run(clean_db, base, path, workers, mode="upsert")
        assert got["chunks"] == 0
        assert (got["job"], got["downloads"], got["table"]) == (
            first["job"], first["downloads"], first["table"])


def test_cancel_stops_every_chunk(clean_db: str, settings: Settings, tmp_path: Path) -> None:
    path = repeats_file(tmp_path, users=6000)
    s = settings.model_copy(update={"batch_size": 20, "chunk_bytes": 8 * 1024,
                                    "split_min_bytes": 1, "max_chunks_in_flight": 3})
    job_id = submit_import(clean_db, s, path, "users")
    with worker_threads(s, clean_db, 3):
        deadline = time.monotonic() + 60

        def in_flight() -> int:
            with db.connect(clean_db, autocommit=True) as c:
                row = c.execute("SELECT count(*) FROM import_chunks WHERE job_id = %s"
                                " AND status = 'processing'", (job_id,)).fetchone()
            return row[0] if row else 0

        # Several chunks in flight, with batches committed.
        while get_job(clean_db, job_id)["processed_records"] < 300 or in_flight() < 2:
            assert time.monotonic() < deadline, "several chunks never ran at once"
            time.sleep(0.02)
        service.cancel(lambda: db.connect(clean_db, autocommit=True), JobKind.IMPORT, job_id)
        time.sleep(2)  # a batch in flight commits; then nothing moves
        before = get_job(clean_db, job_id)
        time.sleep(2)
        after = get_job(clean_db, job_id)
    assert after["status"] == "cancelled"
    assert after["processed_records"] == before["processed_records"] < 6000
    with db.connect(clean_db, autocommit=True) as c:
        states = dict(c.execute("SELECT status, count(*) FROM import_chunks"
                                " WHERE job_id = %s GROUP BY status", (job_id,)).fetchall())
        users = c.execute("SELECT count(*) FROM users").fetchone()
    # The chunks not done will never run: none is left pending or held.
    assert set(states) <= {"done", "dropped"} and states["dropped"] > 0, states
    # What was committed is consistent: every successful record is a row.
    assert users == (after["successful_records"],)


def test_a_graceful_stop_hands_chunks_back(clean_db: str, settings: Settings,
                                           tmp_path: Path) -> None:
    """Workers asked to stop hand their chunks back after the batch in flight; other
    workers resume them after their checkpoints, and the outcome is one stream's."""
    path = repeats_file(tmp_path, users=5000, seed=3)
    s = settings.model_copy(update={"batch_size": 20, "chunk_bytes": 64 * 1024})
    one = one_run(clean_db, s.model_copy(update={"split_min_bytes": 0}), path, 1)
    with db.connect(clean_db, autocommit=True) as c:
        empty_tables(c, ("users", "jobs"))
    split = s.model_copy(update={"split_min_bytes": 1})
    job_id = submit_import(clean_db, split, path, "users")
    deadline = time.monotonic() + 60

    def begun() -> list[tuple[Any, ...]]:
        with db.connect(clean_db, autocommit=True) as c:
            return c.execute("SELECT seq FROM import_chunks WHERE job_id = %s"
                             " AND status = 'processing' AND checkpoint > first_row",
                             (job_id,)).fetchall()

    # Leaving the block stops the workers: they hand their chunks back.
    with worker_threads(split, clean_db, 2, prefix="first"):
        while not begun():
            assert time.monotonic() < deadline, "no chunk committed a batch"
            time.sleep(0.02)
    with db.connect(clean_db, autocommit=True) as c:
        states = c.execute("SELECT status, owner, checkpoint > first_row FROM import_chunks"
                           " WHERE job_id = %s AND NOT is_tail", (job_id,)).fetchall()
    assert not [r for r in states if r[0] == "processing"], "every chunk was handed back"
    assert ("pending", None, True) in states, "a chunk was handed back mid-way"
    run_workers(clean_db, split, 2, job_id)
    job = get_job(clean_db, job_id)
    assert {k: job[k] for k in COUNTERS} == one["job"]
    assert downloads(clean_db, job_id) == one["downloads"]
    with db.connect(clean_db, autocommit=True) as c:
        ids = {r[0] for r in c.execute("SELECT id FROM users")}
        file_ids = ids - {i for i in ids if len(i) == 36 and i.count("-") == 4}
        assert table(c, file_ids) == one["table"]
