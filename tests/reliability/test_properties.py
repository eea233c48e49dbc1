"""Property tests: parsers and validators take any input and never raise.

A parser given any bytes yields records (good or ``malformed``) or raises
:class:`UnreadableFile`; nothing else. A validator given any JSON-like record
returns values and problems; values it accepts can be sent to PostgreSQL as
they are (valid UTF-8, no NUL), and everything echoed back in an error entry or
kept as the original record can be stored as JSON.
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from bulkport.errors import UnreadableFile
from bulkport.jobs.store import _json_text
from bulkport.pipeline import decompress, formats, sources
from bulkport.pipeline.stage import Stager, prepare
from bulkport.pipeline.types import Mode, RawRecord
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources import RESOURCES

MAX_LINE = 1024
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text with the characters that break parsers: quotes, separators, line ends, NUL,
# BOMs, lone surrogates (as JSON escapes), non-ASCII.
_TRICKY = st.sampled_from(['"', ",", "\n", "\r", "\r\n", "\x00", "\ufeff", "{", "[", "]",
                           "}", ":", "\\", "\\ud800", "é", "𝄞", " "])
tricky_text = st.lists(st.one_of(_TRICKY, st.text(max_size=8)), max_size=40).map("".join)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), tricky_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(tricky_text, inner, max_size=4)),
    max_leaves=12,
)


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


deep_values = st.integers(min_value=1, max_value=3000).map(_nested)


def _consume(data: bytes, fmt: formats.Format) -> list[RawRecord]:
    """Run the importer's reading steps on ``data``; UnreadableFile is an allowed outcome."""
    stream = decompress.open_decompressed(io.BytesIO(data))
    try:
        formats.sniff(stream)
        _, records = sources.read_records(stream, fmt, max_line_bytes=MAX_LINE)
        out = list(records)
    except UnreadableFile as exc:
        assert exc.message
        return []
    for rec in out:
        assert rec.row >= 1
        assert (rec.data is None) == (rec.malformed is not None)
        _json_text(rec.original)
    assert [r.row for r in out] == sorted(r.row for r in out)
    return out


@FAST
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(list(formats.Format)))
def test_any_bytes_parse_or_unreadable(data: bytes, fmt: formats.Format) -> None:
    _consume(data, fmt)


@FAST
@given(text=tricky_text, fmt=st.sampled_from(list(formats.Format)))
def test_tricky_text_parses_or_unreadable(text: str, fmt: formats.Format) -> None:
    _consume(text.encode("utf-8", "surrogatepass"), fmt)


@FAST
@given(data=st.binary(max_size=2000), cut=st.integers(min_value=0, max_value=4000),
       fmt=st.sampled_from(list(formats.Format)))
def test_gzip_whole_or_truncated(data: bytes, cut: int, fmt: formats.Format) -> None:
    packed = gzip.compress(data)
    _consume(packed[: max(2, min(cut, len(packed)))], fmt)
    _consume(packed, fmt)


@FAST
@given(records=st.lists(st.one_of(json_values, deep_values,
                                  st.dictionaries(tricky_text, json_values, max_size=6)),
                        max_size=6))
def test_json_documents(records: list[Any]) -> None:
    import orjson

    try:
        ndjson = b"\n".join(orjson.dumps(r) for r in records)
        array = orjson.dumps(records)
    except (TypeError, orjson.JSONEncodeError):
        return  # deeper than orjson writes: covered by test_deep_nesting
    _consume(ndjson, formats.Format.NDJSON)
    _consume(array, formats.Format.JSON)


def test_deep_nesting() -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    for data, fmt in [
        (b"[" + deep + b"]", formats.Format.JSON),
        (b'[{"email":"a@b.co","name":' + deep + b',"role":"admin"}]', formats.Format.JSON),
        (deep + b"\n", formats.Format.NDJSON),
    ]:
        records = _consume(data, fmt)
        batch = prepare(RecordValidator(RESOURCES["users"]),
                        Stager(RESOURCES["users"], Mode.INSERT), records)
        assert not batch.rows and len(batch.rejected) == 1
        for rej in batch.rejected:
            _json_text(rej.original)
            _json_text([e.entry() for e in rej.errors])


def _field_values() -> st.SearchStrategy[Any]:
    return st.one_of(json_values, deep_values,
                     st.sampled_from(["true", "false", "2024-01-01T00:00:00Z", "a@b.co",
                                      "admin", "draft", "published", "a-slug", "u-1", "x" * 70]))


@st.composite
def raw_records(draw: st.DrawFn, resource: str) -> dict[str, Any]:
    names = RESOURCES[resource].column_names
    keys = draw(st.lists(st.one_of(st.sampled_from(names), tricky_text), max_size=10))
    return {k: draw(_field_values()) for k in keys}


@FAST
@given(data=st.data(), resource=st.sampled_from(list(RESOURCES)),
       mode=st.sampled_from(list(Mode)))
def test_validators_never_raise(data: st.DataObject, resource: str, mode: Mode) -> None:
    records = data.draw(st.lists(raw_records(resource), max_size=8))
    raws = [RawRecord(i + 1, r, r) for i, r in enumerate(records)]
    batch = prepare(RecordValidator(RESOURCES[resource]), Stager(RESOURCES[resource], mode),
                    raws)
    assert batch.size == len(raws)
    for row in batch.rows:
        for value in row:
            for text in value if isinstance(value, list) else [value]:
                if isinstance(text, str):
                    text.encode("utf-8")  # COPY sends UTF-8: no lone surrogate may pass
                    assert "\x00" not in text
    for rej in batch.rejected:
        assert rej.errors
        _json_text(rej.original)
        _json_text([e.entry() for e in rej.errors])
