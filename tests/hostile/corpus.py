"""A corpus of hostile input files, each with the outcome bulkport must give.

Every file is generated (deterministically) so that the large ones (a 50 MB
line, a gzip bomb) cost nothing in the repository. Write them all to a folder
to try them by hand::

    python -m tests.hostile.corpus OUT_DIR

Outcomes: a job whose status is one of ``status`` and whose error entries hold
every code in ``codes`` (a clear per-record error), or a ``failed`` job whose
``failure_reason`` contains ``reason``; ``http`` is the expected answer to the
upload itself when it is refused outright.
"""

from __future__ import annotations

import gzip
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

GOOD = b"a@example.com,Ann,admin\n"
HEADER = b"email,name,role\n"
#: Decompressed-size limit the hostile-file server runs with (bytes).
TEST_MAX_DECOMPRESSED_BYTES = 8 * 1024 * 1024
FIFTY_MB = 50 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    #: File name sent with the upload (drives format detection when ``fmt`` is None).
    filename: str
    build: Callable[[Path], None]
    resource: str = "users"
    fmt: str | None = None
    status: frozenset[str] = frozenset({"completed_with_errors"})
    codes: frozenset[str] = frozenset()
    reason: str | None = None
    http: int = 202
    #: Exact (successful, rejected) counts when they are known.
    counts: tuple[int, int] | None = None
    note: str = field(default="", compare=False)


def _bytes(data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data)
    return write


def _failed(reason: str) -> dict[str, object]:
    return {"status": frozenset({"failed"}), "reason": reason}


def _rejects(*codes: str, counts: tuple[int, int] | None = None) -> dict[str, object]:
    return {"status": frozenset({"completed_with_errors"}), "codes": frozenset(codes),
            "counts": counts}


def _ok(n: int) -> dict[str, object]:
    return {"status": frozenset({"completed"}), "counts": (n, 0)}


def _long_csv_line(path: Path) -> None:
    with path.open("wb") as f:
        f.write(HEADER)
        f.write(b"b@example.com,")
        chunk = b"x" * (1024 * 1024)
        for _ in range(FIFTY_MB // len(chunk)):
            f.write(chunk)
        f.write(b",admin\n")
        f.write(GOOD)


def _long_ndjson_line(path: Path) -> None:
    with path.open("wb") as f:
        f.write(b'{"email": "b@example.com", "role": "admin", "name": "')
        chunk = b"y" * (1024 * 1024)
        for _ in range(FIFTY_MB // len(chunk)):
            f.write(chunk)
        f.write(b'"}\n{"email": "a@example.com", "name": "Ann", "role": "admin"}\n')


def _one_line_no_newline(path: Path) -> None:
    with path.open("wb") as f:
        chunk = b"z," * (512 * 1024)
        for _ in range(FIFTY_MB // len(chunk)):
            f.write(chunk)


def _bomb(path: Path, unit: bytes, head: bytes = b"") -> None:
    """A gzip file of many members; decompressed it is 32x the test limit."""
    member = gzip.compress(unit * (TEST_MAX_DECOMPRESSED_BYTES // len(unit)), compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(head))
        for _ in range(32):
            f.write(member)


def _newline_bomb(path: Path) -> None:
    # Blank lines are no records: without a limit this reads 256 MiB (or terabytes) of nothing.
    _bomb(path, b"\n", head=HEADER + GOOD)


def _zero_bomb(path: Path) -> None:
    # One endless line of NUL bytes: without bounds it is read into memory whole.
    _bomb(path, b"\x00")


def _truncated_gzip(path: Path) -> None:
    data = gzip.compress(HEADER + GOOD * 2000)
    path.write_bytes(data[: len(data) // 2])


def _binary_garbage(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(64 * 1024))


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _many_columns(path: Path) -> None:
    extra = ",".join(f"c{i}" for i in range(20_000)).encode()
    values = ",".join("v" for _ in range(20_000)).encode()
    path.write_bytes(HEADER.rstrip(b"\n") + b"," + extra + b"\n"
                     + GOOD.rstrip(b"\n") + b"," + values + b"\n")


def _huge_json_value(path: Path) -> None:
    """JSON array: one record whose name is 50 MB, then a good record.

    Not gzipped: the hostile server's decompression limit is 8 MiB (the gzipped
    repro is tests/reliability/test_json_array.py).
    """
    with path.open("wb") as f:
        f.write(b'[{"email": "j@example.com", "role": "admin", "name": "')
        chunk = b"a" * (1024 * 1024)
        for _ in range(FIFTY_MB // len(chunk)):
            f.write(chunk)
        f.write(b'"},\n' + GOOD_JSON + b"]")


GOOD_JSON = b'{"email": "a@example.com", "name": "Ann", "role": "admin"}'


def _json_array(*elements: bytes) -> Callable[[Path], None]:
    return _bytes(b"[" + b",\n".join(elements) + b"]")


def _user_json(**fields: str) -> bytes:
    body = ", ".join(f'"{k}": {v}' for k, v in
                     {"email": '"b@example.com"', "name": '"Bob"', "role": '"admin"',
                      **fields}.items())
    return ("{" + body + "}").encode()


CASES: list[Case] = [
    # --- encodings and line ends
    Case("bom_csv", "bom.csv", _bytes(b"\xef\xbb\xbf" + HEADER + GOOD), **_ok(1)),
    Case("bom_ndjson", "bom.ndjson",
         _bytes(b'\xef\xbb\xbf{"email": "a@example.com", "name": "Ann", "role": "admin"}\n'),
         **_ok(1)),
    Case("bom_json", "bom.json",
         _bytes(b'\xef\xbb\xbf[{"email": "a@example.com", "name": "Ann", "role": "admin"}]'),
         **_ok(1)),
    Case("crlf_csv", "crlf.csv", _bytes((HEADER + GOOD + b"b@example.com,Bob,reader\n")
                                        .replace(b"\n", b"\r\n")), **_ok(2)),
    Case("cr_only_csv", "cr.csv", _bytes((HEADER + GOOD).replace(b"\n", b"\r")), **_ok(1)),
    Case("crlf_ndjson", "crlf.ndjson",
         _bytes(b'{"email": "a@example.com", "name": "Ann", "role": "admin"}\r\n\r\n'),
         **_ok(1)),
    Case("quoted_newlines_csv", "quoted.csv",
         _bytes(HEADER + b'a@example.com,"Ann\nSecond line\r\nthird",admin\n'
                + b'b@example.com,"Bob, ""the"" builder",reader\n'), **_ok(2)),
    Case("unterminated_quote_csv", "unterminated.csv",
         _bytes(HEADER + GOOD + b'b@example.com,"Bob,reader\nc@example.com,Cy,admin\n'),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("invalid_utf8_csv", "latin1.csv",
         _bytes(HEADER + GOOD + b"b@example.com,Bj\xf6rn,admin\n"),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("invalid_utf8_header_csv", "latin1-header.csv", _bytes(b"em\xe4il,name,role\n" + GOOD),
         **_failed("UTF-8")),
    # UTF-16 with its byte-order mark is read as UTF-16 (docs/imports.md, "Encodings").
    Case("utf16_csv", "utf16.csv", _bytes((HEADER + GOOD).decode().encode("utf-16")),
         **_ok(1)),
    Case("invalid_utf8_ndjson", "latin1.ndjson",
         _bytes(b'{"email": "a@example.com", "name": "Ann", "role": "admin"}\n'
                b'{"email": "b@example.com", "name": "Bj\xf6rn", "role": "admin"}\n'),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("invalid_utf8_json", "latin1.json",
         _bytes(b'[{"email": "a@example.com", "name": "Ann", "role": "admin"},'
                b' {"email": "b@example.com", "name": "Bj\xf6rn", "role": "admin"}]'),
         **_rejects("malformed_record")),
    # --- columns
    # A header lacking a required field is refused at upload (docs/imports.md).
    Case("missing_column_csv", "no-role.csv", _bytes(b"email,name\na@example.com,Ann\n"),
         http=422),
    Case("extra_column_csv", "extra.csv",
         _bytes(b"email,name,role,nickname\na@example.com,Ann,admin,annie\n"), **_ok(1)),
    Case("ragged_rows_csv", "ragged.csv",
         _bytes(HEADER + GOOD + b"b@example.com,Bob\nc@example.com,Cy,admin,extra\n"),
         **_rejects("malformed_record", counts=(1, 2))),
    Case("duplicate_header_csv", "dup-header.csv", _bytes(b"email,name,email,role\n" + GOOD),
         **_failed("repeats column")),
    Case("empty_header_csv", "blank-header.csv", _bytes(b"\n" + GOOD), **_failed("header")),
    Case("many_columns_csv", "wide.csv", _many_columns, **_ok(1)),
    # The delimiter is detected from the header line.
    Case("semicolon_csv", "semicolons.csv", _bytes(b"email;name;role\na@example.com;Ann;admin\n"),
         **_ok(1)),
    # --- types and values
    Case("wrong_types_ndjson", "types.ndjson",
         _bytes(b'{"email": 42, "name": ["Ann"], "role": {"r": 1}, "active": "maybe",'
                b' "created_at": 12}\n'),
         **_rejects("invalid_email_format", "invalid_name", "invalid_role", "invalid_active",
                    "invalid_created_at", counts=(0, 1))),
    Case("wrong_types_csv", "types.csv",
         _bytes(b"id,email,name,role,active,created_at\n"
                b"not an id!,x,Ann,boss,yes,yesterday\n"),
         **_rejects("invalid_id_format", "invalid_email_format", "invalid_role",
                    "invalid_active", "invalid_created_at", counts=(0, 1))),
    Case("nul_bytes_csv", "nul.csv", _bytes(HEADER + GOOD + b"b@example.com,B\x00b,admin\n"),
         **_rejects("invalid_name", counts=(1, 1))),
    Case("nul_escape_ndjson", "nul.ndjson",
         _bytes(b'{"email": "b@example.com", "name": "B\\u0000b", "role": "admin",'
                b' "x\\u0000": 1}\n'), **_rejects("invalid_name", counts=(0, 1))),
    Case("timezone_out_of_range", "tz.ndjson",
         _bytes(b'{"email": "a@example.com", "name": "Ann", "role": "admin",'
                b' "created_at": "2024-01-01T00:00:00+23:59"}\n'
                b'{"email": "b@example.com", "name": "Bob", "role": "admin"}\n'),
         status=frozenset({"completed", "completed_with_errors"})),
    Case("huge_numbers_ndjson", "numbers.ndjson",
         # Too large for a 64-bit float or integer: the line cannot be read.
         _bytes(b'{"email": "a@example.com", "name": "Ann", "role": "admin", "active": '
                + b"9" * 400 + b"}\n"), **_rejects("malformed_record", counts=(0, 1))),
    # --- JSON array elements read alone: one bad element is one record
    Case("lone_low_surrogate_json", "surrogate.json",
         _json_array(GOOD_JSON, _user_json(name='"\\udfff"')),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("lone_surrogate_mid_string_json", "surrogate-mid.json",
         _json_array(_user_json(name='"Bo\\ud800b"'), GOOD_JSON),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("lone_surrogate_in_key_json", "surrogate-key.json",
         _json_array(GOOD_JSON, _user_json(**{"\\udfff": '"x"'})),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("reversed_surrogate_pair_json", "surrogate-pair.json",
         _json_array(_user_json(name='"\\udfff\\ud800"'), GOOD_JSON),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("lone_surrogate_ndjson", "surrogate.ndjson",
         _bytes(GOOD_JSON + b"\n" + _user_json(name='"\\udfff"') + b"\n"),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("huge_json_string_value_50mb", "huge-value.json", _huge_json_value,
         **_rejects("malformed_record", counts=(1, 1))),
    Case("huge_json_number", "huge-number.json",
         _json_array(_user_json(active="9" * 400), GOOD_JSON),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("deep_json_value_within_limits", "deep-ok.json",
         _json_array(_user_json(name=_deep(60).decode()), GOOD_JSON),
         **_rejects("invalid_name", counts=(1, 1))),
    # --- values PostgreSQL would store but could not export back
    Case("created_at_out_of_range", "created.ndjson",
         _bytes(b"\n".join([_user_json(created_at='"0001-01-01T00:00:00+14:00"'),
                            GOOD_JSON]) + b"\n"),
         **_rejects("invalid_created_at", counts=(1, 1))),
    Case("updated_at_out_of_range", "updated.csv",
         _bytes(b"email,name,role,updated_at\n" + GOOD.rstrip(b"\n") + b",\n"
                b"b@example.com,Bob,admin,9999-12-31T23:59:59-14:00\n"),
         **_rejects("invalid_updated_at", counts=(1, 1))),
    Case("published_at_out_of_range", "published.ndjson",
         _bytes(b'{"slug": "a-1", "title": "T", "body": "B", "author_id": "x",'
                b' "status": "published", "published_at": "9999-12-31T10:00:00-14:00"}\n'),
         resource="articles", **_rejects("invalid_published_at", counts=(0, 1))),
    # --- NDJSON lines that are JSON but not objects
    Case("ndjson_scalar_and_array_lines", "scalars.ndjson",
         _bytes(b'[1,2]\n42\n"x"\nnull\n["a","b","c"]\n' + GOOD_JSON + b"\n"),
         **_rejects("malformed_record", counts=(1, 5))),
    # --- spreadsheet formulas (the error CSV download neutralises them)
    Case("formula_cells_csv", "formulas.csv",
         _bytes(HEADER + b'"=HYPERLINK(""http://x"",""y"")",Ann,admin\n'
                b"@SUM(A1:A9)@x.com,=cmd|' /C calc'!A0,boss\n"
                b"c@example.com,+1+2,admin\n"),
         **_rejects("invalid_email_format", "invalid_role", counts=(1, 2))),
    # --- nesting and size
    Case("deep_json_element", "deep.json", _bytes(b"[" + _deep(10_000) + b"]"),
         **_rejects("malformed_record")),
    Case("deep_json_field", "deep-field.json",
         _bytes(b'[{"email": "a@example.com", "name": ' + _deep(10_000) + b', "role": "admin"}]'),
         **_rejects("malformed_record")),
    Case("deep_ndjson_line", "deep.ndjson", _bytes(_deep(10_000) + b"\n"),
         **_rejects("malformed_record", counts=(0, 1))),
    Case("deep_ndjson_field", "deep-field.ndjson",
         _bytes(b'{"email": "a@example.com", "name": ' + _deep(300) + b', "role": "admin"}\n'),
         **_rejects("invalid_name", counts=(0, 1))),
    Case("long_line_csv_50mb", "long.csv", _long_csv_line,
         **_rejects("malformed_record", counts=(1, 1))),
    Case("long_line_ndjson_50mb", "long.ndjson", _long_ndjson_line,
         **_rejects("malformed_record", counts=(1, 1))),
    Case("single_line_no_newline_50mb", "one-line.csv", _one_line_no_newline,
         **_failed("header")),
    # --- compression
    Case("truncated_gzip", "cut.csv.gz", _truncated_gzip, **_failed("truncated")),
    Case("gzip_bomb_newlines", "bomb.csv.gz", _newline_bomb, **_failed("decompressed")),
    Case("gzip_bomb_zeros", "zeros.csv.gz", _zero_bomb, **_failed("")),
    Case("gzip_of_gzip", "double.csv.gz", _bytes(gzip.compress(gzip.compress(HEADER + GOOD))),
         **_failed("")),
    # --- empty and not what it claims
    Case("empty_file", "empty.csv", _bytes(b""), http=400),
    Case("whitespace_only", "blank.csv", _bytes(b" \n\r\n\t\n"), **_failed("empty")),
    Case("bom_only", "bom-only.csv", _bytes(b"\xef\xbb\xbf"), **_failed("")),
    Case("header_only_csv", "header.csv", _bytes(HEADER), **_failed("no records")),
    Case("empty_json_array", "empty.json", _bytes(b"[]"), **_failed("no records")),
    Case("json_scalar", "scalar.json", _bytes(b'"just a string"'), fmt="json",
         **_failed("array")),
    Case("json_number", "number.json", _bytes(b"42"), fmt="json", **_failed("array")),
    Case("json_array_of_scalars", "scalars.json", _bytes(b'[1, "a", null, true, [2]]'),
         **_rejects("malformed_record", counts=(0, 5))),
    Case("json_truncated", "cut.json",
         _bytes(b'[{"email": "a@example.com", "name": "Ann", "role": "admin"}, {"email":'),
         **_rejects("malformed_record", counts=(1, 1))),
    Case("json_trailing_garbage", "garbage.json",
         _bytes(b'[{"email": "a@example.com", "name": "Ann", "role": "admin"}] trailing'),
         status=frozenset({"completed", "completed_with_errors"})),
    Case("mixed_ndjson_and_csv", "mixed.ndjson",
         _bytes(b'{"email": "a@example.com", "name": "Ann", "role": "admin"}\n'
                + GOOD + b'{"email": "b@example.com", "name": "Bob", "role": "reader"}\n'),
         **_rejects("malformed_record", counts=(2, 1))),
    Case("csv_declared_as_json", "users.csv", _bytes(HEADER + GOOD), fmt="json",
         **_failed("array")),
    Case("ndjson_declared_as_csv", "users.ndjson",
         _bytes(b'{"email": "a@example.com", "name": "Ann", "role": "admin"}\n'), fmt="csv",
         http=422),
    Case("binary_garbage", "garbage.bin", _binary_garbage,
         status=frozenset({"failed", "completed_with_errors"})),
    Case("articles_bad_references", "articles.ndjson",
         _bytes(b'{"slug": "a-1", "title": "T", "body": "B", "author_id": "a-missing-12510",'
                b' "status": "published"}\n'
                b'{"slug": "Not A Slug", "title": "T", "body": "B", "author_id": "x",'
                b' "status": "published"}\n'
                b'{"slug": "a-2", "title": "T", "body": "B", "author_id": "x",'
                b' "status": "draft", "published_at": "2024-01-01T00:00:00Z"}\n'),
         resource="articles",
         **_rejects("invalid_author_id", "invalid_slug_format",
                    "draft_cannot_have_published_at", counts=(0, 3))),
]


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else "hostile-corpus")
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        case.build(out / f"{case.name}--{case.filename}")
    print(f"wrote {len(CASES)} files to {out}")


if __name__ == "__main__":
    main(sys.argv)
