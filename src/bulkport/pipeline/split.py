"""Cutting a large import into chunks: one sequential pass over the stored file.

:func:`plan` reads a CSV or NDJSON file once, byte by byte as the readers see it
(:mod:`bulkport.pipeline.csvreader`, :mod:`bulkport.pipeline.ndjson`), and cuts it
at record boundaries near every ``chunk_bytes``. Records are counted exactly as
the readers count them (blank lines are no records; a CSV line holding a double
quote is consumed as ``csv.reader`` consumes it, quoted line breaks included),
so that a chunk's first record has a known row number. Anything the pass cannot
count with certainty (a bare carriage return, a line over the limit, a quoted
header, a CSV error) means: no plan, the file runs as one stream.

The same pass collects, per record, a 64-bit hash of its given id and of its
natural key (:class:`KeyHasher`). A value found in more than one chunk is *hot*:
the chunks hold back the records carrying one, and a tail loads them in file
order once every chunk is done (docs/imports.md, "Chunked imports", has the
argument why that gives the outcome of one stream). A hash collision only makes
a value hot, which is safe.

No SQL and no job state here: the job runtime stores the plan.
"""

from __future__ import annotations

import csv
import heapq
import itertools
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from zlib import adler32, crc32

import orjson

from bulkport.pipeline.headers import key_mapper
from bulkport.resources.base import Resource
from bulkport.resources.compile import copy_unescape

#: Formats a plan can cut; JSON arrays need a full parse to find their boundaries.
SPLIT_FORMATS = ("csv", "ndjson")


@dataclass(frozen=True, slots=True)
class ChunkRange:
    """One chunk of the file: bytes ``[start_byte, end_byte)``, its records' rows after
    ``first_row``."""

    seq: int
    start_byte: int
    end_byte: int
    #: Row number of the chunk's first record, minus one.
    first_row: int


@dataclass(slots=True)
class Plan:
    """The chunks of a file and the hot hashes (values found in more than one chunk)."""

    chunks: list[ChunkRange]
    hot: list[int] = field(default_factory=list)
    records: int = 0


@dataclass(frozen=True, slots=True)
class ChunkWork:
    """A claimed chunk: its range, where it stands, and what the plan gives every chunk."""

    seq: int
    is_tail: bool
    start_byte: int
    end_byte: int
    first_row: int
    #: The last row committed (the tail: the last held record's row).
    checkpoint: int
    bytes_done: int
    #: Hot hashes of the plan, and the insert defaults evaluated once for the job.
    hot: frozenset[int]
    defaults: Sequence[tuple[int, str]]


def not_split_reason(*, size: int | None, min_bytes: int, fmt: str | None, codec: str,
                     declared_encoding: str | None, gzip: bool, dry_run: bool,
                     mode: str, checkpoint: int) -> str | None:
    """Why the import runs as one stream; ``None`` when it may be split."""
    if min_bytes <= 0:
        return "splitting is off"
    if size is None or size < min_bytes:
        return "smaller than BULKPORT_SPLIT_MIN_BYTES"
    if gzip:
        return "gzip allows no random access"
    if fmt not in SPLIT_FORMATS:
        return "JSON array boundaries need a full parse"
    if codec != "utf-8" or declared_encoding not in (None, "utf-8"):
        return "not UTF-8"
    if dry_run:
        return "a dry run checks in one rolled-back transaction"
    if mode != "insert":
        return "an upsert may change stored keys, which no pass over the file sees"
    if checkpoint:
        return "resumed as one stream"
    return None


# --- hashing ids and natural keys ----------------------------------------------------------

#: Keys and ids are hashed apart (a key equal to an id is another value).
_KEY_SALT = 0x5BD1E9955BD1E995


#: What ``str.strip()`` removes from ASCII text (``bytes.strip()`` keeps \x1c-\x1f).
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def stable_hash(text: str | bytes) -> int:
    """A signed 64-bit hash of ``text`` (UTF-8), the same in every process (``hash`` is
    not): CRC-32 and Adler-32, two C functions, cheap enough for every record of the
    pass. A collision only makes a value hot (a record held for the tail), never wrong."""
    data = text if text.__class__ is bytes else text.encode(  # type: ignore[union-attr]
        "utf-8", "surrogateescape")
    return ((crc32(data) << 32) | adler32(data)) - (1 << 63)


def key_hash(text: str | bytes) -> int:
    return stable_hash(text) ^ _KEY_SALT


def _norm_cell(cell: bytes) -> bytes:
    """:func:`_norm` of a CSV cell, on its bytes: ASCII (nearly every cell) stays bytes."""
    if cell.isascii():
        return cell.strip(_ASCII_SPACE).lower()
    return cell.decode("utf-8", "surrogateescape").strip().lower().encode(
        "utf-8", "surrogateescape")


def _norm(value: Any) -> str:
    """A value coarser than the validator's: stripped and lower-cased ("" for none).

    Two values the stage compares as equal (an id as given; a key stripped,
    COPY-unescaped and lower-cased when case-insensitive) are equal here too, so
    the hash of a record's value is found whatever the validator makes of it.
    """
    if value is None or isinstance(value, bool | dict | list):
        return ""
    return (value if value.__class__ is str else str(value)).strip().lower()


class KeyHasher:
    """A record's id and natural key, normalised (:func:`_norm`), from the raw record or
    a valid one; and their hashes."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.key_fields = resource.natural_key
        names = resource.column_names
        self._key_index = [names.index(n) for n in resource.natural_key]

    def values(self, get: Callable[[str], Any]) -> tuple[str, str]:
        """``(id, key)`` of the raw values ``get(field)`` gives ("": none)."""
        key = ""
        if self.key_fields:
            parts = [_norm(get(n)) for n in self.key_fields]
            key = "\x1f".join(parts) if all(parts) else ""
        return _norm(get("id")), key

    def hashes(self, get: Callable[[str], Any]) -> list[int]:
        """Hashes of the id and key that ``get(field)`` gives (raw values)."""
        rid, key = self.values(get)
        return _hashes(rid, key)

    def valid_hashes(self, values: Sequence[str | None]) -> list[int]:
        """The same hashes from a valid record's COPY text values (id None: generated)."""
        key = ""
        if self._key_index:
            parts = []
            for i in self._key_index:
                v = values[i]
                parts.append(_norm(copy_unescape(v) if v is not None and "\\" in v else v))
            key = "\x1f".join(parts) if all(parts) else ""
        return _hashes(_norm(values[0]), key)


def _hashes(rid: str, key: str) -> list[int]:
    out = [stable_hash(rid)] if rid else []
    if key:
        out.append(key_hash(key))
    return out


# --- the pass -------------------------------------------------------------------------------


class _Odd(Exception):
    """Something the pass cannot count as the readers would: do not split."""


class _Cutter:
    """Cuts chunks at record starts and gathers each chunk's distinct ids and keys."""

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.chunks: list[ChunkRange] = []
        self.start = -1
        self.first_row = 0
        self.rows = 0
        #: The current chunk's distinct ids and keys (strings: cheap to add; hashed
        #: once per distinct value when the chunk closes).
        self.ids: set[str | bytes] = set()
        self.keys: set[str | bytes] = set()
        self.done: list[array[int]] = []

    def record_at(self, offset: int) -> None:
        """A record starts at ``offset``: cut before it when the chunk is full."""
        if self.start < 0:
            self.start = offset
        elif offset - self.start >= self.chunk_bytes:
            self._close(offset)
            self.start = offset
            self.first_row = self.rows
        self.rows += 1

    def add(self, rid: str, key: str) -> None:
        if rid:
            self.ids.add(rid)
        if key:
            self.keys.add(key)

    def _close(self, end: int) -> None:
        self.chunks.append(ChunkRange(len(self.chunks), self.start, end, self.first_row))
        for empty in ("", b""):
            self.ids.discard(empty)
            self.keys.discard(empty)
        hashes = {stable_hash(v) for v in self.ids}
        hashes.update([key_hash(v) for v in self.keys])
        self.done.append(array("q", sorted(hashes)))
        # Cleared in place: the scan holds on to these two sets.
        self.ids.clear()
        self.keys.clear()

    def finish(self, size: int) -> Plan | None:
        if self.start < 0:
            return None
        self._close(size)
        if len(self.chunks) < 2:
            return None
        return Plan(self.chunks, _hot(self.done), self.rows)


def _hot(per_chunk: list[array[int]]) -> list[int]:
    """Hashes present in two or more chunks (each chunk's list is sorted and distinct)."""
    return [value for value, group in itertools.groupby(heapq.merge(*per_chunk))
            if sum(1 for _ in group) > 1]


def plan(stream: IO[bytes], resource: Resource, *, fmt: str, chunk_bytes: int,
         max_line_bytes: int, delimiter: str = ",",
         fields: Sequence[str | None] | None = None,
         column_map: dict[str, str] | None = None) -> Plan | None:
    """The chunks of a stored CSV or NDJSON file (read from its start); ``None``: one
    stream (fewer than two chunks, or something the pass cannot count for sure)."""
    cutter = _Cutter(chunk_bytes)
    hasher = KeyHasher(resource)
    try:
        if fmt == "csv":
            size = _scan_csv(stream, cutter, hasher, delimiter, fields or [], max_line_bytes)
        else:
            size = _scan_ndjson(stream, cutter, hasher, column_map, max_line_bytes)
    except _Odd:
        return None
    return cutter.finish(size)


def _checked(line: bytes, limit: int) -> bytes:
    if len(line) > limit:
        raise _Odd("line over the limit")
    body = line[:-1] if line.endswith(b"\n") else line
    if b"\r" in body[:-1]:
        raise _Odd("a bare carriage return ends a line for the CSV reader")
    return line


def _scan_csv(stream: IO[bytes], cutter: _Cutter, hasher: KeyHasher, d: str,
              fields: Sequence[str | None], limit: int) -> int:
    readline = stream.readline
    header = readline(limit + 1)
    if not header or b'"' in _checked(header, limit):
        raise _Odd("no header, or a quoted header")
    offset = len(header)
    # The first column feeding each field (as the validator reads it).
    position = {f: i for i, f in reversed(list(enumerate(fields))) if f}
    width = len(fields)
    separators = width - 1
    sep = d.encode()
    csv.field_size_limit(limit)  # as the reader sets it
    id_at = position.get("id")
    key_at = [position.get(f) for f in hasher.key_fields]
    one_key = key_at[0] if len(key_at) == 1 else None
    record_at, add, ids, keys = cutter.record_at, cutter.add, cutter.ids, cutter.keys

    def values_getter(values: list[str]) -> Callable[[str], Any]:
        def get(name: str) -> Any:
            i = position.get(name)
            return values[i] if i is not None else None
        return get

    while line := readline(limit + 1):
        if len(line) > limit or b"\r" in line[:-2] or not line.endswith(b"\n"):
            _checked(line, limit)
        if b'"' in line:
            record_at(offset)
            used = [len(line)]

            def lines(first: bytes = line, used: list[int] = used) -> Iterator[str]:
                yield first.decode("utf-8", "surrogateescape")
                while nxt := readline(limit + 1):
                    used.append(len(_checked(nxt, limit)))
                    yield nxt.decode("utf-8", "surrogateescape")

            try:
                values = next(csv.reader(lines(), delimiter=d, strict=False))
            except (csv.Error, StopIteration):
                raise _Odd("CSV error") from None
            offset += sum(used)
            if len(values) == width:
                add(*hasher.values(values_getter(values)))
            continue
        offset += len(line)
        body = line.rstrip(b"\r\n")
        if not body:
            continue  # blank line: not a record
        record_at(offset - len(line))
        if body.count(sep) != separators:
            continue  # malformed: rejected whatever comes before or after
        # The hot path, inlined: the id and key cells, stripped and lower-cased as
        # bytes (hashed as the UTF-8 of the same text, see _norm_cell).
        cells = body.split(sep)
        if id_at is not None:
            cell = cells[id_at]
            ids.add(cell.strip(_ASCII_SPACE).lower() if cell.isascii() else _norm_cell(cell))
        if one_key is not None:
            cell = cells[one_key]
            keys.add(cell.strip(_ASCII_SPACE).lower() if cell.isascii() else _norm_cell(cell))
        elif key_at and None not in key_at:
            parts = [_norm_cell(cells[i]) for i in key_at]  # type: ignore[index]
            if all(parts):
                keys.add(b"\x1f".join(parts))
    return offset


def _scan_ndjson(stream: IO[bytes], cutter: _Cutter, hasher: KeyHasher,
                 column_map: dict[str, str] | None, limit: int) -> int:
    readline = stream.readline
    remap = key_mapper(hasher.resource, column_map)
    offset = 0
    first = True
    while line := readline(limit + 1):
        if len(line) > limit:
            raise _Odd("line over the limit")
        text = line[3:] if first and line.startswith(b"\xef\xbb\xbf") else line
        first = False
        if text.strip():
            cutter.record_at(offset)
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                data = None
            if isinstance(data, dict):
                cutter.add(*hasher.values(remap(data).get))
        offset += len(line)
    return offset

