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
from hashlib import blake2b
from typing import IO, Any

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


def stable_hash(tag: bytes, text: str) -> int:
    """A signed 64-bit hash of ``text`` that is the same in every process (not ``hash``)."""
    digest = blake2b(tag + text.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _norm(value: Any) -> str | None:
    """A value coarser than the validator's: stripped and lower-cased.

    Two values the stage compares as equal (an id as given; a key stripped,
    COPY-unescaped and lower-cased when case-insensitive) are equal here too, so
    the hash of a record's value is found whatever the validator makes of it.
    """
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = (value if value.__class__ is str else str(value)).strip().lower()
    return text or None


class KeyHasher:
    """The hashes of a record's id and natural key, from the raw record or a valid one."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.key_fields = resource.natural_key
        names = resource.column_names
        self._key_index = [names.index(n) for n in resource.natural_key]

    def hashes(self, get: Callable[[str], Any]) -> list[int]:
        """Hashes of the id and key that ``get(field)`` gives (raw values)."""
        out = []
        rid = _norm(get("id"))
        if rid is not None:
            out.append(stable_hash(b"i\x00", rid))
        if self.key_fields:
            parts = [_norm(get(n)) for n in self.key_fields]
            if None not in parts:
                out.append(stable_hash(b"k\x00", "\x1f".join(parts)))  # type: ignore[arg-type]
        return out

    def valid_hashes(self, values: Sequence[str | None], id_given: bool = True) -> list[int]:
        """The same hashes from a valid record's COPY text values."""
        def unescaped(i: int) -> str | None:
            v = values[i]
            return copy_unescape(v) if v is not None and "\\" in v else v

        out = []
        rid = _norm(values[0]) if id_given else None
        if rid is not None:
            out.append(stable_hash(b"i\x00", rid))
        if self._key_index:
            parts = [_norm(unescaped(i)) for i in self._key_index]
            if None not in parts:
                out.append(stable_hash(b"k\x00", "\x1f".join(parts)))  # type: ignore[arg-type]
        return out


# --- the pass -------------------------------------------------------------------------------


class _Odd(Exception):
    """Something the pass cannot count as the readers would: do not split."""


class _Cutter:
    """Cuts chunks at record starts and gathers each chunk's distinct hashes."""

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.chunks: list[ChunkRange] = []
        self.start = -1
        self.first_row = 0
        self.rows = 0
        self.current: set[int] = set()
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

    def _close(self, end: int) -> None:
        self.chunks.append(ChunkRange(len(self.chunks), self.start, end, self.first_row))
        self.done.append(array("q", sorted(self.current)))
        self.current = set()

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
    position = {f: i for i, f in reversed(list(enumerate(fields))) if f}
    width = len(fields)
    sep = d.encode()
    bd = d
    csv.field_size_limit(limit)  # as the reader sets it

    def values_getter(values: list[str]) -> Callable[[str], Any]:
        def get(name: str) -> Any:
            i = position.get(name)
            return values[i] if i is not None else None
        return get

    while line := readline(limit + 1):
        _checked(line, limit)
        if b'"' in line:
            cutter.record_at(offset)
            used = [len(line)]

            def lines(first: bytes = line, used: list[int] = used) -> Iterator[str]:
                yield first.decode("utf-8", "surrogateescape")
                while nxt := readline(limit + 1):
                    used.append(len(_checked(nxt, limit)))
                    yield nxt.decode("utf-8", "surrogateescape")

            try:
                values = next(csv.reader(lines(), delimiter=bd, strict=False))
            except (csv.Error, StopIteration):
                raise _Odd("CSV error") from None
            offset += sum(used)
            if len(values) == width:
                cutter.current.update(hasher.hashes(values_getter(values)))
            continue
        if line.rstrip(b"\r\n"):
            cutter.record_at(offset)
            if line.count(sep) == width - 1:
                text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
                cutter.current.update(hasher.hashes(values_getter(text.split(bd))))
        offset += len(line)
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
                cutter.current.update(hasher.hashes(remap(data).get))
        offset += len(line)
    return offset

