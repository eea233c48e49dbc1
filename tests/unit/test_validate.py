"""Validate stage: raw records become ValidRecord or Rejected, nothing else."""

from __future__ import annotations

from bulkport.pipeline.types import RawRecord, ValidRecord
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources import RESOURCES
from bulkport.resources.base import NULL

USERS = RESOURCES["users"]
HEADER = ["E-Mail", "name", "role", "extra"]
FIELDS = ["email", "name", "role", None]


def _csv() -> RecordValidator:
    return RecordValidator(USERS, HEADER, fields=FIELDS)


def test_a_plain_line_and_a_parsed_row_give_the_same_record() -> None:
    valid, rejected = _csv().validate([RawRecord(2, "a@b.co,Ann,admin,x", None),
                                       RawRecord(3, ["a@b.co", "Ann", "admin", "x"], None)])
    assert rejected == []
    assert [r.values for r in valid] == [[None, "a@b.co", "Ann", "admin", NULL, NULL, NULL]] * 2
    assert [r.row for r in valid] == [2, 3]
    first = valid[0]
    assert isinstance(first, ValidRecord)
    assert first.value("role") == "admin" and first.value("id") is None
    assert first.id_given  # until the stage generates one
    # The record as uploaded, under the file's own column names.
    assert first.original == {"E-Mail": "a@b.co", "name": "Ann", "role": "admin", "extra": "x"}


def test_a_rejected_record_keeps_the_file_columns_and_every_problem() -> None:
    valid, [rejected] = _csv().validate([RawRecord(7, ["nope", "", "king", "x"], None)])
    assert valid == []
    assert rejected.row == 7
    assert rejected.original == {"E-Mail": "nope", "name": "", "role": "king", "extra": "x"}
    assert [(e.row, e.field, e.code) for e in rejected.errors] == [
        (7, "email", "invalid_email_format"), (7, "name", "name_required"),
        (7, "role", "invalid_role")]
    assert rejected.errors[0].value == "nope"


def test_an_unparsable_record_is_malformed() -> None:
    valid, [rejected] = _csv().validate([RawRecord(4, None, {"_raw": "x"}, "bad quoting")])
    assert valid == []
    assert rejected.original == {"_raw": "x"}
    assert [(e.code, e.message) for e in rejected.errors] == [("malformed_record", "bad quoting")]


def test_json_keys_are_matched_and_mapped_to_fields() -> None:
    validator = RecordValidator(USERS, column_map={"mail": "email"})
    record = {"mail": "a@b.co", "Name": "Ann", "role": "reader", "id": "u1"}
    [valid], rejected = validator.validate([RawRecord(1, record, record)])
    assert rejected == []
    assert valid.values[:4] == ["u1", "a@b.co", "Ann", "reader"]
    assert valid.original == record


def test_records_keep_file_order_in_each_list() -> None:
    lines = ["a@b.co,A,reader,", "bad,A,reader,", "c@b.co,C,reader,", ",,,"]
    valid, rejected = _csv().validate([RawRecord(i + 2, x, None) for i, x in enumerate(lines)])
    assert [r.row for r in valid] == [2, 4]
    assert [r.row for r in rejected] == [3, 5]
