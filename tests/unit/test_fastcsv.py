"""The plain-line CSV fast path never disagrees with the general validator."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bulkport.resources import RESOURCES
from bulkport.resources.compile import compile_validator
from bulkport.resources.fastcsv import compile_fast_csv

CELLS = st.one_of(
    st.sampled_from(["", " ", "admin", "reader", "manager", "true", "false", "TRUE", "x",
                     "a@b.co", "foo@bar", " a@b.co", "'=1+2", "'a@b.co", "2024-01-01T00:00:00Z",
                     "2024-02-30T00:00:00Z", "2024-01-01T00:00:00.123Z", "2024-01-01",
                     "cm_5f74", "user 1", "a\\b", "word " * 501, "id:1.2-3", "ü", "\x00"]),
    st.text(alphabet=st.characters(blacklist_characters=',"\n\r'), max_size=12),
)


def _check(resource: str, columns: list[str], cells: list[str], d: str = ",") -> None:
    line = d.join(cells)
    fast = compile_fast_csv(RESOURCES[resource], columns, d)
    assert fast is not None
    got = fast(line)
    if got is not None:
        values, problems = compile_validator(RESOURCES[resource], columns)(line.split(d))
        assert problems is None, (line, problems)
        assert got == values, line


@settings(max_examples=400, deadline=None)
@given(st.lists(CELLS, min_size=8, max_size=8))
def test_users_fast_path_agrees(cells: list[str]) -> None:
    _check("users", ["id", "email", "name", "role", "active", "created_at", "updated_at",
                     "ignored"], cells)


@settings(max_examples=400, deadline=None)
@given(st.lists(CELLS | st.sampled_from([";", "|", "a;b", "a|b", "a,b", "x@y.z;"]),
                min_size=8, max_size=8), st.sampled_from([";", "\t", "|"]))
def test_users_fast_path_agrees_with_other_delimiters(cells: list[str], d: str) -> None:
    _check("users", ["id", "email", "name", "role", "active", "created_at", "updated_at",
                     "ignored"], cells, d)


def test_other_delimiters_take_the_plain_lines() -> None:
    columns = ["id", "email", "name", "role", "", "created_at"]
    for d in (";", "\t", "|"):
        fast = compile_fast_csv(RESOURCES["users"], columns, d)
        assert fast is not None
        line = d.join(["u1", "a@b.co", "Doe, Ann", "admin", "ignored, x", ""])
        assert fast(line) == ["u1", "a@b.co", "Doe, Ann", "admin", "\\N", "\\N", "\\N"], d
        assert fast(line.replace("a@b.co", "a" + d + "b.co")) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(CELLS, min_size=5, max_size=5))
def test_comments_fast_path_agrees(cells: list[str]) -> None:
    _check("comments", ["id", "body", "article_id", "user_id", "created_at"], cells)


def test_fast_path_takes_the_plain_lines() -> None:
    columns = ["id", "email", "name", "role", "active", "created_at", "updated_at"]
    fast = compile_fast_csv(RESOURCES["users"], columns)
    assert fast is not None
    assert fast("u1,a@b.co,Ann,admin,true,2024-01-01T00:00:00Z,") == [
        "u1", "a@b.co", "Ann", "admin", "t", "2024-01-01T00:00:00Z", "\\N"]
    assert fast(",a@b.co,Ann,admin,,,") == [None, "a@b.co", "Ann", "admin", "\\N", "\\N", "\\N"]
    assert fast("u1,foo@bar,Ann,admin,true,,") is None  # left to the general rules
    assert compile_fast_csv(RESOURCES["users"], ["email", "name"]) is None  # no role column
    assert compile_fast_csv(RESOURCES["articles"], ["slug"]) is None  # cross-field rule


HOSTILE_CELLS = ["a " * 100_000, "a." * 100_000, "a-" * 100_000, "a@b." * 50_000,
                 " " * 200_000 + "a", "a" * 200_000]


def test_refusing_a_long_line_costs_linear_time() -> None:
    """A long cell before a cell that fails must not make the regex backtrack (ReDoS).

    The worker runs this pattern on every plain line of an upload, up to
    MAX_LINE_BYTES (1 MiB) long: a quadratic pattern turns one such line into hours
    of CPU. Each line here is ~200 KB; linear matching takes about a millisecond.
    """
    import time

    covered = []
    for (name, resource), d in itertools.product(RESOURCES.items(), (",", ";", "|")):
        columns = [f.name for f in resource.fields]
        fast = compile_fast_csv(resource, columns, d)
        if fast is None:  # a resource with cross-field rules has no fast path
            continue
        covered.append(name)
        for i in range(len(columns) - 1):
            for cell in HOSTILE_CELLS:
                cells = ["x"] * len(columns)
                cells[i] = cell
                cells[-1] = "not,valid\\"  # a backslash: no cell pattern accepts it
                started = time.perf_counter()
                assert fast(d.join(cells)) is None
                elapsed = time.perf_counter() - started
                assert elapsed < 0.5, (name, columns[i], cell[:8], elapsed)
    assert covered == ["users"] * 3 + ["comments"] * 3
