"""Load stage on the real PostgreSQL: rounds written set-based, rejections by record."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bulkport.pipeline.load import Loader, load_rounds
from bulkport.pipeline.stage import Stager, insert_defaults, prepare
from bulkport.pipeline.types import Mode, PreparedBatch, RawRecord
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources import RESOURCES

USERS = RESOURCES["users"]
HEADER = ["id", "email", "name", "role"]


@pytest.fixture
def db(clean_db: str) -> Any:
    with psycopg.connect(clean_db, autocommit=True) as c:
        yield c


def _job(conn: psycopg.Connection[Any], mode: Mode, resource: str = "users"
         ) -> tuple[Loader, RecordValidator, Stager]:
    res = RESOURCES[resource]
    return (Loader(conn, res, mode), RecordValidator(res, HEADER if resource == "users" else None),
            Stager(res, mode, insert_defaults(conn, res)))


def _batch(validator: RecordValidator, stager: Stager, records: list[Any]) -> PreparedBatch:
    return prepare(validator, stager, [RawRecord(i + 1, r, None) for i, r in enumerate(records)])


def _users(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str]]:
    return conn.execute("SELECT id, email, name FROM users ORDER BY id").fetchall()


def test_insert_copies_a_clean_round(db: psycopg.Connection[Any]) -> None:
    loader, validator, stager = _job(db, Mode.INSERT)
    batch = _batch(validator, stager, ["u1,a@x.co,A,reader", "u2,b@x.co,B,admin"])
    assert loader.load(batch.staged) == {}
    assert _users(db) == [("u1", "a@x.co", "A"), ("u2", "b@x.co", "B")]


def test_a_key_stored_before_the_job_is_rejected_and_the_rest_loads(
        db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO users (id, email, name, role) VALUES ('old', 'A@X.co', 'O', 'reader')")
    loader, validator, stager = _job(db, Mode.INSERT)
    batch = _batch(validator, stager, ["u1,a@x.co,A,reader", "old,c@x.co,C,reader",
                                       "u3,d@x.co,D,reader"])
    found = loader.load(batch.staged)
    assert {row: [(e.field, e.value, e.code) for e in errs] for row, errs in found.items()} == {
        1: [("email", "a@x.co", "duplicate_email")], 2: [("id", "old", "duplicate_id")]}
    assert _users(db) == [("old", "A@X.co", "O"), ("u3", "d@x.co", "D")]


def test_rounds_apply_in_file_order_and_rejections_keep_the_uploaded_record(
        db: psycopg.Connection[Any]) -> None:
    loader, validator, stager = _job(db, Mode.INSERT)
    batch = _batch(validator, stager, ["u1,a@x.co,A,reader", "u2,A@x.co,B,reader"])
    rounds: list[Any] = []
    [rejected] = load_rounds(loader, stager, batch, rounds)
    assert len(rounds) == 2
    assert rejected.row == 2
    assert rejected.original == {"id": "u2", "email": "A@x.co", "name": "B", "role": "reader"}
    assert [e.code for e in rejected.errors] == ["duplicate_email"]


def test_upsert_updates_by_key_and_the_last_record_wins(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO users (id, email, name, role) VALUES ('u1', 'a@x.co', 'O', 'reader')")
    loader, validator, stager = _job(db, Mode.UPSERT)
    batch = _batch(validator, stager, [",A@x.co,First,reader", ",a@x.co,Second,reader",
                                       ",n@x.co,New,reader"])
    assert load_rounds(loader, stager, batch) == []
    stored = sorted(_users(db), key=lambda u: u[1])
    assert stored[0] == ("u1", "a@x.co", "Second")
    assert [s[1:] for s in stored[1:]] == [("n@x.co", "New")]


def test_a_missing_reference_is_named_with_its_value(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO users (id, email, name, role) VALUES ('u1', 'a@x.co', 'A', 'author')")
    for mode in (Mode.INSERT, Mode.UPSERT):
        loader, validator, stager = _job(db, mode, "articles")
        article = {"slug": f"s-{mode}", "title": "t", "body": "b", "status": "draft"}
        batch = _batch(validator, stager, [{**article, "author_id": "ghost"},
                                           {**article, "slug": f"ok-{mode}", "author_id": "u1"}])
        [rejected] = load_rounds(loader, stager, batch)
        assert [(e.field, e.value, e.code) for e in rejected.errors] == [
            ("author_id", "ghost", "invalid_author_id")]
    slugs = db.execute("SELECT slug FROM articles ORDER BY slug").fetchall()
    assert slugs == [("ok-insert",), ("ok-upsert",)]


def _copies(trace: Any) -> int:
    """COPY statements the client sent, from libpq's protocol trace."""
    text = trace.read_text()
    return sum(1 for line in text.splitlines() if "\tF\t" in line and "Query" in line
               and '"COPY ' in line)


def test_a_round_the_probe_rejects_whole_sends_no_copy(db: psycopg.Connection[Any],
                                                       tmp_path: Any) -> None:
    """In-batch repeats of written rows make a second round that the probe rejects
    whole: it costs the probe, not a savepoint and a COPY of nothing."""
    loader, validator, stager = _job(db, Mode.INSERT)
    batch = _batch(validator, stager, ["u1,a@x.co,A,reader", "u2,b@x.co,B,reader",
                                       "u3,A@x.co,C,reader", "u1,c@x.co,D,reader"])
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as f:
        db.pgconn.trace(f.fileno())
        try:
            rounds: list[Any] = []
            rejected = load_rounds(loader, stager, batch, rounds)
        finally:
            db.pgconn.untrace()
    assert len(rounds) == 2
    assert [(r.row, [e.code for e in r.errors]) for r in rejected] == [
        (3, ["duplicate_email"]), (4, ["duplicate_id"])]
    assert _copies(trace) == 1  # the first round's; the second round copies nothing
    assert _users(db) == [("u1", "a@x.co", "A"), ("u2", "b@x.co", "B")]


def test_rows_the_probe_rejects_are_left_out_of_the_copy_wherever_they_are(
        db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO users (id, email, name, role) VALUES "
               "('old1', 'o1@x.co', 'O', 'reader'), ('old2', 'o2@x.co', 'O', 'reader')")
    loader, validator, stager = _job(db, Mode.INSERT)
    batch = _batch(validator, stager, ["u1,O1@x.co,A,reader", "u2,b@x.co,B,reader",
                                       "old2,c@x.co,C,reader", "u4,d@x.co,D,reader",
                                       "u5,o2@X.co,E,reader"])
    found = loader.load(batch.staged)
    assert {row: [e.code for e in errs] for row, errs in found.items()} == {
        1: ["duplicate_email"], 3: ["duplicate_id"], 5: ["duplicate_email"]}
    assert [u[0] for u in _users(db)] == ["old1", "old2", "u2", "u4"]
