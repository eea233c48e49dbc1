"""The validator compiled from a declaration: COPY text out, every problem of a record."""

from __future__ import annotations

import pytest

from bulkport.resources import RESOURCES
from bulkport.resources.base import NULL, Field, Kind, Resource
from bulkport.resources.compile import compile_validator, copy_escape, copy_unescape

USERS = RESOURCES["users"]
COLUMNS = ["id", "email", "name", "role", "active", "created_at", "updated_at"]


def test_list_and_dict_records_give_the_same_values() -> None:
    record = ["u1", " A@Example.com ", "Ann", "admin", "TRUE", "2024-01-01T00:00:00Z", ""]
    by_list = compile_validator(USERS, COLUMNS)(record)
    by_dict = compile_validator(USERS)(dict(zip(COLUMNS, record, strict=True)))
    assert by_list == by_dict
    assert by_list == (["u1", "A@Example.com", "Ann", "admin", "t", "2024-01-01T00:00:00Z",
                        NULL], None)


def test_an_absent_optional_id_is_none_and_a_short_row_is_empty() -> None:
    values, problems = compile_validator(USERS, COLUMNS)(["", "a@b.co", "A", "reader"])
    assert problems is None
    assert values[0] is None and values[4:] == [NULL, NULL, NULL]


def test_every_problem_of_a_record_is_reported() -> None:
    _, problems = compile_validator(USERS)({"id": "bad id", "email": "nope", "role": "king",
                                            "active": "maybe"})
    assert problems is not None
    assert [(p.field, p.code) for p in problems] == [
        ("id", "invalid_id_format"), ("email", "invalid_email_format"),
        ("name", "name_required"), ("role", "invalid_role"), ("active", "invalid_active")]
    assert problems[1].value == "nope"


def test_values_come_out_escaped_for_copy() -> None:
    values, problems = compile_validator(USERS)({"email": "a@b.co", "name": "a\tb\\c\nd",
                                                 "role": "reader"})
    assert problems is None
    assert values[2] == "a\\tb\\\\c\\nd"
    assert copy_unescape(values[2]) == "a\tb\\c\nd"


@pytest.mark.parametrize("text", ["", "plain", "tab\there", "back\\slash", "cr\rlf\n", "\\N"])
def test_copy_unescape_inverts_copy_escape(text: str) -> None:
    assert copy_unescape(copy_escape(text)) == text


def test_timestamps_are_normalised_and_range_checked() -> None:
    validate = compile_validator(USERS)
    base = {"email": "a@b.co", "name": "A", "role": "reader"}
    assert validate({**base, "created_at": "2024-01-01 10:00:00"})[0][5] == \
        "2024-01-01T10:00:00+00:00"
    assert validate({**base, "created_at": "2024-01-01T10:00:00+02:00"})[0][5] == \
        "2024-01-01T10:00:00+02:00"
    _, problems = validate({**base, "created_at": "0001-01-01T00:00:00+14:00"})
    assert problems is not None and problems[0].code == "invalid_created_at"


def test_tags_become_an_array_literal() -> None:
    articles = RESOURCES["articles"]
    base = {"slug": "s", "title": "t", "body": "b", "author_id": "u1", "status": "draft"}
    validate = compile_validator(articles)
    assert validate({**base, "tags": 'a, b ,"c'})[0][6] == '{"a","b","\\\\"c"}'
    assert validate({**base, "tags": ["x"]})[0][6] == '{"x"}'
    _, problems = validate({**base, "tags": [1]})
    assert problems is not None and problems[0].code == "invalid_tags"


def test_cross_field_checks_run_with_the_field_rules() -> None:
    _, problems = compile_validator(RESOURCES["articles"])({
        "slug": "Bad Slug", "title": "t", "body": "b", "author_id": "u1", "status": "draft",
        "published_at": "2024-01-01T00:00:00Z"})
    assert problems is not None
    assert [p.code for p in problems] == ["invalid_slug_format", "draft_cannot_have_published_at"]


def test_a_composite_natural_key_must_be_required_fields() -> None:
    fields = (Field("id", Kind.ID), Field("a", Kind.REF, required=True), Field("b", Kind.TEXT))
    Resource(name="pairs", fields=fields, natural_key=("a",))
    with pytest.raises(AssertionError, match="natural key field b must be required"):
        Resource(name="pairs", fields=fields, natural_key=("a", "b"))
