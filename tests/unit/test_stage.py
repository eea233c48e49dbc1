"""Stage: in-file repeats wait for a later round; ids, defaults and COPY payloads."""

from __future__ import annotations

from typing import Any

import psycopg

from bulkport.pipeline.stage import SeenFilter, Stager, insert_defaults, key_function
from bulkport.pipeline.types import Mode, RecordShape, ValidRecord
from bulkport.resources import RESOURCES
from bulkport.resources.base import NULL, Field, Kind, Resource

USERS = RESOURCES["users"]
PAIRS = Resource(name="pairs", natural_key=("a", "b"), natural_key_ci=True, fields=(
    Field("id", Kind.ID), Field("a", Kind.TEXT, required=True),
    Field("b", Kind.TEXT, required=True)))
SHAPE = RecordShape(None, ",", {n: i for i, n in enumerate(USERS.column_names)})
DEFAULTS = [(4, "t"), (5, "2024-01-01 00:00:00+00"), (6, "2024-01-01 00:00:00+00")]


def _user(row: int, email: str, rid: str | None = None, active: str = NULL) -> ValidRecord:
    return ValidRecord(row, [rid, email, "N", "reader", active, NULL, NULL], {"email": email},
                       SHAPE)


def _pair(row: int, a: str, b: str) -> ValidRecord:
    return ValidRecord(row, [None, a, b], None, RecordShape(None, ",", {"id": 0, "a": 1, "b": 2}))


def test_insert_repeats_wait_for_the_next_round_and_the_first_wins() -> None:
    stager = Stager(USERS, Mode.INSERT, DEFAULTS)
    first = stager.stage([_user(1, "a@x.co"), _user(2, "b@x.co", "u2"), _user(3, "A@X.CO"),
                          _user(4, "c@x.co", "u2"), _user(5, "d@x.co")])
    assert [r.row for r in first.records] == [1, 2, 5]
    assert [r.row for r in first.deferred] == [3, 4]
    assert first.keys == ["a@x.co", "b@x.co", "d@x.co"]  # lower case: the key is ci
    second = stager.stage(first.deferred)
    assert [r.row for r in second.records] == [3, 4] and second.deferred == []
    # Round two repeats keys the job already staged: the loader probes them first.
    assert second.candidates == [0, 1]
    assert first.candidates == []


def test_upsert_defers_every_record_after_a_repeat() -> None:
    stager = Stager(USERS, Mode.UPSERT, DEFAULTS)
    first = stager.stage([_user(1, "a@x.co"), _user(2, "a@x.co"), _user(3, "z@x.co"),
                          _user(4, "y@x.co")])
    assert [r.row for r in first.records] == [1]
    assert [r.row for r in first.deferred] == [2, 3, 4]
    assert [r.row for r in stager.stage(first.deferred).records] == [2, 3, 4]


def test_generated_ids_and_insert_defaults() -> None:
    insert = Stager(USERS, Mode.INSERT, DEFAULTS)
    insert.new_id = lambda: "gen-1"
    [given, generated] = insert.stage([_user(1, "a@x.co", "u1", active="f"),
                                       _user(2, "b@x.co")]).records
    assert (given.values[0], given.id_given) == ("u1", True)
    assert (generated.values[0], generated.id_given) == ("gen-1", False)
    assert given.values[4:] == ["f", "2024-01-01 00:00:00+00", "2024-01-01 00:00:00+00"]
    assert generated.values[4] == "t"
    # An upsert leaves empty values NULL: "keep the stored value".
    [upserted] = Stager(USERS, Mode.UPSERT, DEFAULTS).stage([_user(1, "a@x.co")]).records
    assert upserted.values[4:] == [NULL, NULL, NULL]


def test_payloads_are_copy_text_for_the_table_or_the_staging_table() -> None:
    insert = Stager(USERS, Mode.INSERT, DEFAULTS).stage([_user(1, "a@x.co", "u1")])
    assert insert.payload == "u1\ta@x.co\tN\treader\tt\t2024-01-01 00:00:00+00\t" \
        "2024-01-01 00:00:00+00\n"
    upsert = Stager(USERS, Mode.UPSERT).stage([_user(7, "a@x.co", "u1"), _user(9, "b@x.co")])
    lines = (upsert.payload or "").splitlines()
    assert lines[0] == "u1\ta@x.co\tN\treader\t\\N\t\\N\t\\N\t7\tt"
    assert lines[1].endswith("\t9\tf")
    assert Stager(USERS, Mode.INSERT).stage([]).payload is None


def test_a_composite_key_repeats_only_when_every_field_matches() -> None:
    key_of = key_function(PAIRS)
    assert key_of is not None and key_of([None, "U1", "a\\tb"]) == ("u1", "a\tb")
    assert key_function(RESOURCES["comments"]) is None
    stager = Stager(PAIRS, Mode.INSERT)
    first = stager.stage([_pair(1, "u1", "a1"), _pair(2, "u1", "a2"), _pair(3, "u2", "a1"),
                          _pair(4, "U1", "A1")])
    assert [r.row for r in first.records] == [1, 2, 3]
    assert [r.row for r in first.deferred] == [4]
    assert first.keys == [("u1", "a1"), ("u1", "a2"), ("u2", "a1")]


def test_seen_filter_has_no_false_negatives() -> None:
    seen = SeenFilter()
    values = [f"v{i}" for i in range(10_000)]
    assert not any(seen.check_and_add(v) for v in values[:1])
    for v in values[1:]:
        seen.check_and_add(v)
    assert all(seen.check_and_add(v) for v in values)
    assert sum(seen.check_and_add(f"w{i}") for i in range(10_000)) < 100


def test_insert_defaults_are_evaluated_once_by_the_database(conn: psycopg.Connection[Any]
                                                            ) -> None:
    defaults = insert_defaults(conn, USERS)
    assert [i for i, _ in defaults] == [4, 5, 6]
    assert defaults[0][1] == "true"
    assert defaults[1][1] == defaults[2][1]  # one now() for the whole job
    assert insert_defaults(conn, RESOURCES["comments"])[0][0] == 4


def test_by_row_finds_the_records_of_a_round_in_any_order() -> None:
    staged = Stager(USERS, Mode.INSERT).stage([_user(r, f"u{r}@x.co", f"u{r}")
                                               for r in (2, 5, 9, 14)])
    found = staged.by_row({14, 2})
    assert {row: rec.value("email") for row, rec in found.items()} == {
        2: "u2@x.co", 14: "u14@x.co"}
    assert staged.by_row({3}) == {} and staged.by_row(set()) == {}
    # Records out of file order (none of the stage's rounds is): still found, by a pass.
    staged.records.reverse()
    assert sorted(staged.by_row({5, 9})) == [5, 9]
