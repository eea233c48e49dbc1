"""The export encoder: JSON array framing over chunks of rows, and gzip."""

from __future__ import annotations

import gzip

import orjson

from bulkport.pipeline.export.encoder import Encoder
from bulkport.pipeline.formats import Format


def test_json_framing_over_chunks() -> None:
    enc = Encoder(Format.JSON)
    out = enc.feed(b'{"a":1}\n{"a":2}\n') + enc.feed(b'{"a":3}\n') + enc.end()
    assert orjson.loads(out) == [{"a": 1}, {"a": 2}, {"a": 3}]
    empty = Encoder(Format.JSON)
    assert orjson.loads(empty.end()) == []


def test_gzip_encoder() -> None:
    enc = Encoder(Format.CSV, gzip=True)
    out = enc.feed(b"id\n1\n") + enc.feed(b"2\n") + enc.end()
    assert gzip.decompress(out) == b"id\n1\n2\n"


def test_ndjson_and_csv_pass_through() -> None:
    for fmt in (Format.NDJSON, Format.CSV):
        enc = Encoder(fmt)
        assert enc.feed(b"a\nb\n") + enc.feed(b"c\n") + enc.end() == b"a\nb\nc\n"
