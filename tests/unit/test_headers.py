"""The header matcher: names to fields, column maps, the missing-field suggestion."""

from __future__ import annotations

import pytest

from bulkport.errors import BadRequest, MissingRequiredFields, UnreadableFile
from bulkport.pipeline.csvreader import detect_delimiter, parse_delimiter
from bulkport.pipeline.headers import (
    check_required,
    key_mapper,
    match_columns,
    normalise,
    parse_column_map,
    scorer,
    suggest_map,
)
from bulkport.resources import get_resource

USERS = get_resource("users")


@pytest.mark.parametrize(("name", "field"), [
    ("Email", "email"), (" email ", "email"), ("EMAIL", "email"), ("Created At", "created_at"),
    ("created-at", "created_at"), ("created_at", "created_at"), ("\tName\t", "name"),
])
def test_names_match_fields(name: str, field: str) -> None:
    assert normalise(name) == field
    assert match_columns([name], USERS) == [field]


def test_unknown_columns_are_ignored() -> None:
    assert match_columns(["Email", "Phone", "e mail x"], USERS) == ["email", None, None]


def test_column_map_overrides_matching() -> None:
    cmap = parse_column_map('{"Full Name": "name", "name": "id"}', USERS)
    assert match_columns(["name", "Full Name", "Email"], USERS, cmap) == ["id", "name", "email"]
    # A map key matches its column by the normalised name too.
    assert match_columns(["FULL-NAME"], USERS, cmap) == ["name"]


def test_bad_column_maps() -> None:
    with pytest.raises(BadRequest) as err:
        parse_column_map({"Mail": "e_mail"}, USERS)
    assert err.value.details["fields"] == USERS.column_names
    with pytest.raises(BadRequest, match="same field"):
        parse_column_map({"a": "email", "b": "email"}, USERS)
    for bad in ("[]", "{", '{"a": 1}', "3"):
        with pytest.raises(BadRequest, match="JSON object"):
            parse_column_map(bad, USERS)
    assert parse_column_map(None, USERS) is None and parse_column_map("", USERS) is None


def test_two_columns_for_one_field_is_unreadable() -> None:
    with pytest.raises(UnreadableFile, match="'Email', 'email'"):
        match_columns(["Email", "email", "name"], USERS)


def test_missing_required_suggests_close_headers() -> None:
    columns = ["id", "E-mail", "Nmae", "Rolle", "zzz"]
    fields = match_columns(columns, USERS)
    assert suggest_map(columns, fields, USERS, ["email", "name", "role"]) == {
        "E-mail": "email", "Nmae": "name", "Rolle": "role"}
    with pytest.raises(MissingRequiredFields) as err:
        check_required(columns, fields, USERS)
    assert err.value.status_code == 422
    assert err.value.details["missing"] == ["email", "name", "role"]
    assert err.value.details["headers"] == columns
    check_required(["email", "name", "role"], ["email", "name", "role"], USERS)  # no raise


def test_no_suggestion_for_unrelated_headers() -> None:
    columns = ["id", "qqq"]
    assert suggest_map(columns, match_columns(columns, USERS), USERS, ["email"]) == {}


def test_json_keys_are_renamed() -> None:
    remap = key_mapper(USERS, None)
    same = {"email": "a@b.co", "name": "n"}
    assert remap(same) is same  # the common case costs no copy
    assert remap({"Email": "a@b.co", "Created At": "x", "other": 1}) == {
        "email": "a@b.co", "created_at": "x"}
    # An exact field name wins over a key that only normalises onto it.
    assert remap({"Email": "x", "email": "y"}) == {"email": "y"}
    assert key_mapper(USERS, {"Mail": "email"})({"Mail": "m"}) == {"email": "m"}


# --- delimiter detection --------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("id,email,name,role\r\n", ","), ("id;email;name;role\n", ";"),
    ("id\temail\tname\trole\n", "\t"), ("id|email|name|role\n", "|"),
    ("Id;Email;Full, Name;Role\n", ";"),  # a comma inside a column name
    ('"a;b",email,name\n', ","),  # quoting is RFC 4180 for every candidate
    ("email\n", ","),  # one column: the first candidate
    ("x;y;z\n", ";"),  # nothing matches: the candidate giving most columns
    ("x;y;z,email,name\n", ","),  # matched fields before column count
])
def test_detect_delimiter(line: str, expected: str) -> None:
    assert detect_delimiter(line, scorer(USERS, None)) == expected


def test_column_map_names_count_for_detection() -> None:
    line = "Kennung;Adresse;Wer|Rolle\n"
    assert detect_delimiter(line, scorer(USERS, None)) == ";"  # more columns
    assert detect_delimiter(line, scorer(USERS, {"Wer|Rolle": "role", "x": "id"})) == ";"
    assert detect_delimiter("a|b;c|role\n", scorer(USERS, None)) == "|"


def test_parse_delimiter() -> None:
    assert [parse_delimiter(v) for v in (",", ";", "|", "\t", "tab", "TAB", "semicolon")] == [
        ",", ";", "|", "\t", "\t", "\t", ";"]
    assert parse_delimiter(None) is None and parse_delimiter("") is None
    with pytest.raises(BadRequest, match="delimiter"):
        parse_delimiter("::")
