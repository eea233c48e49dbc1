"""Export requests: what is allowed, what is refused (with the allowed values)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bulkport.api.export_stream import accepts_gzip
from bulkport.errors import BadRequest
from bulkport.pipeline.export_spec import FILTERS, parse_spec
from bulkport.pipeline.formats import Format
from bulkport.resources import RESOURCES
from bulkport.sql.exporting import export_statement


def test_defaults_all_fields_ndjson_no_filters() -> None:
    spec = parse_spec("users", None, None, {})
    assert spec.format is Format.NDJSON
    assert spec.fields == tuple(RESOURCES["users"].column_names)
    assert spec.conditions == () and spec.filename == "users.ndjson"


def test_fields_projection_dedupes_and_keeps_order() -> None:
    assert parse_spec("users", "csv", "email, id,email", {}).fields == ("email", "id")
    assert parse_spec("users", "csv", ["role", "id,name"], {}).fields == ("role", "id", "name")


@pytest.mark.parametrize(("args", "message", "allowed"), [
    ((None, None, None, {}), "'resource' is required", ["users", "articles", "comments"]),
    (("posts", None, None, {}), "unknown resource 'posts'", ["users", "articles", "comments"]),
    (("users", "xml", None, {}), "unknown format 'xml'", ["csv", "ndjson", "json"]),
    (("users", None, "id,password", {}), "unknown field(s) 'password'",
     ["id", "email", "name", "role", "active", "created_at", "updated_at"]),
    (("users", None, None, {"status": ["x"]}), "unknown filter(s) 'status'",
     list(FILTERS["users"])),
    (("users", None, None, {"role": ["boss"]}), "role must be one of", ["admin", "author",
                                                                         "reader"]),
    (("users", None, None, {"active": ["yes"]}), "active must be true or false",
     ["true", "false"]),
])
def test_bad_requests_name_what_is_allowed(args: tuple, message: str, allowed: list[str]) -> None:
    with pytest.raises(BadRequest) as err:
        parse_spec(*args)
    assert message in err.value.message
    assert err.value.details["allowed"] == allowed


@pytest.mark.parametrize(("filters", "message"), [
    ({"created_at_from": ["yesterday"]}, "must be an ISO-8601 timestamp"),
    ({"updated_since": ["2024-13-01"]}, "must be an ISO-8601 timestamp"),
    ({"created_at_to": ["2024-01-01", "2024-02-01"]}, "takes one value"),
    ({"author_id": ["bad id!"]}, "must be an id"),
    ({"author_id": [""]}, "needs a value"),
    ({"tag": ["x" * 1001]}, "needs a value"),
])
def test_bad_filter_values(filters: dict, message: str) -> None:
    resource = "users" if any(k.startswith(("created", "updated")) for k in filters) \
        else "articles"
    with pytest.raises(BadRequest, match=message):
        parse_spec(resource, None, None, filters)


def test_filters_are_typed_and_normalised() -> None:
    spec = parse_spec("articles", None, None, {
        "status": ["published", "published", "draft"], "tag": "x",
        "created_at_from": "2024-01-01", "updated_since": "2024-01-01T02:00:00+02:00"})
    conditions = {c.field + c.op: c.values for c in spec.conditions}
    assert conditions["statusin"] == ("published", "draft")
    assert conditions["tagscontains"] == ("x",)
    assert conditions["created_at>="] == (datetime(2024, 1, 1, tzinfo=UTC),)
    assert spec.filters["updated_since"] == ["2024-01-01T02:00:00+02:00"]
    assert spec.filters["created_at_from"] == ["2024-01-01T00:00:00Z"]


def test_filters_derive_from_the_declarations() -> None:
    assert set(FILTERS["articles"]) == {
        "author_id", "status", "tag", "created_at_from", "created_at_to", "created_since",
        "updated_at_from", "updated_at_to", "updated_since"}
    assert set(FILTERS["comments"]) == {
        "article_id", "user_id", "created_at_from", "created_at_to", "created_since"}


def test_the_statement_quotes_every_value() -> None:
    spec = parse_spec("articles", "csv", "id,title", {"tag": ["it's"], "author_id": ["a.b"]})
    text = export_statement(spec.resource, spec.fields, spec.conditions, "csv").as_string(None)
    assert "'{it''s}'::text[]" in text and "x.\"author_id\" = 'a.b'" in text
    assert text.endswith("ORDER BY x.id) TO STDOUT (FORMAT csv, HEADER)")
    assert "OFFSET" not in text


@pytest.mark.parametrize(("header", "gz"), [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("br, GZIP", True), ("gzip;q=0", False),
    ("identity", False), (None, False), ("x-gzip", True), ("gzip;q=zero", False),
])
def test_accept_encoding(header: str | None, gz: bool) -> None:
    assert accepts_gzip(header) is gz
