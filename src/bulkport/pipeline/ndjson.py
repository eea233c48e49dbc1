"""Records of an NDJSON file: one JSON object per line, each line bounded.

A line longer than ``max_line_bytes`` is skipped as it streams by (never held)
and is one malformed record; so is a line that is not JSON or not an object.
Blank lines are not records.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import IO

import orjson

from bulkport.pipeline.types import RawRecord


def read_ndjson(stream: IO[bytes], max_line_bytes: int) -> Iterator[RawRecord]:
    row = 0
    first = True
    readline = stream.readline
    while True:
        line = readline(max_line_bytes + 1)
        if not line:
            return
        if first:
            first = False
            if line.startswith(codecs.BOM_UTF8):
                line = line[3:]
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            # Too long: skip the rest of the line without holding it.
            while True:
                rest = readline(max_line_bytes)
                if not rest or rest.endswith(b"\n"):
                    break
            row += 1
            yield RawRecord(row, None, None, f"the line is longer than {max_line_bytes} bytes")
            continue
        if not line.strip():
            continue
        row += 1
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            original = line.decode("utf-8", "replace").rstrip("\r\n")
            yield RawRecord(row, None, {"_raw": original}, f"the line is not valid JSON: {exc}")
            continue
        if not isinstance(data, dict):
            # Kept as the line itself: a parsed list would read as the cells of a row.
            yield RawRecord(row, None, {"_raw": line.decode().strip()},
                            "the line is not a JSON object")
            continue
        yield RawRecord(row, data, None)
