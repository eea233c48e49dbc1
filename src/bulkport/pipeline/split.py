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
import io
import itertools
import re
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import eq, itemgetter
from typing import IO, Any
from zlib import crc32

import orjson

from bulkport.pipeline.headers import key_mapper
from bulkport.pipeline.keyhash import ASCII_SPACE, KEY_SEP, KeyHasher, norm_cell
from bulkport.resources.base import Resource

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


# --- the pass -------------------------------------------------------------------------------

#: The pass reads this much at a time (less when chunks are smaller), to a line end.
BLOCK_BYTES = 1 << 20


class _Odd(Exception):
    """Something the pass cannot count as the readers would: do not split."""


class _Cutter:
    """Cuts chunks at block starts (record boundaries) and gathers each chunk's distinct
    ids and keys, hashed once per distinct value when the chunk closes."""

    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.chunks: list[ChunkRange] = []
        self.start = -1
        self.first_row = 0
        self.rows = 0
        self.values: set[bytes] = set()
        self.done: list[array[int]] = []

    def at(self, offset: int) -> None:
        """A record boundary: cut there when the chunk is full and holds a record."""
        if self.start < 0:
            self.start = offset
        elif offset - self.start >= self.chunk_bytes and self.rows > self.first_row:
            self._close(offset)
            self.start = offset
            self.first_row = self.rows

    def record_at(self, offset: int) -> None:
        """A record starts at ``offset`` (line by line: NDJSON)."""
        self.at(offset)
        self.rows += 1

    def _close(self, end: int) -> None:
        self.chunks.append(ChunkRange(len(self.chunks), self.start, end, self.first_row))
        self.values.discard(b"")
        self.done.append(array("q", map(crc32, self.values)))  # stable_hash, in C
        self.values.clear()  # in place: the scan holds on to this set

    def finish(self, size: int) -> Plan | None:
        if self.start < 0 or self.rows == 0:
            return None
        if self.rows > self.first_row:
            self._close(size)
        else:  # only blank lines after the last cut: they end the last chunk
            last = self.chunks.pop()
            self.chunks.append(ChunkRange(last.seq, last.start_byte, size, last.first_row))
        if len(self.chunks) < 2:
            return None
        return Plan(self.chunks, _hot(self.done), self.rows)


def _hot(per_chunk: list[array[int]]) -> list[int]:
    """Hashes present in two or more chunks (each chunk's hashes are distinct): one sort
    of them all, equal neighbours."""
    every = sorted(itertools.chain.from_iterable(per_chunk))
    # In C: each value equal to the next one.
    return sorted(set(itertools.compress(every, map(eq, every, itertools.islice(every, 1, None)))))


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
            size = _CsvScan(stream, cutter, hasher, delimiter, fields or [],
                            max_line_bytes).run()
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


class _CsvScan:
    """The CSV pass: block by block; a block without quotes nor bare carriage returns
    (nearly all) is counted and its id/key cells taken by C code (``split``,
    ``count``, one regular expression), any other block line by line as
    ``csv.reader`` reads it."""

    def __init__(self, stream: IO[bytes], cutter: _Cutter, hasher: KeyHasher, d: str,
                 fields: Sequence[str | None], limit: int) -> None:
        self.stream, self.cutter, self.hasher, self.d = stream, cutter, hasher, d
        self.limit = limit
        # The first column feeding each field (as the validator reads it).
        self.position = {f: i for i, f in reversed(list(enumerate(fields))) if f}
        self.width = len(fields)
        wanted = ["id", *hasher.key_fields]
        self.wanted = [self.position.get(f) for f in wanted]
        positions = sorted({i for i in self.wanted if i is not None})
        self.cells = _cells_pattern(positions, d.encode())
        #: The pattern's group of each wanted column.
        self.group = {p: g for g, p in enumerate(positions)}
        self.block = min(BLOCK_BYTES, max(1, cutter.chunk_bytes))

    def run(self) -> int:
        stream, limit = self.stream, self.limit
        header = stream.readline(limit + 1)
        if not header or b'"' in _checked(header, limit):
            raise _Odd("no header, or a quoted header")
        csv.field_size_limit(limit)  # as the reader sets it
        offset = len(header)
        while block := stream.read(self.block):
            if not block.endswith(b"\n"):
                block += stream.readline(limit + 1)
            self.cutter.at(offset)
            if block.count(b"\r") != block.count(b"\r\n"):
                offset = self._slow(block, offset)  # says whether a bare CR is fine
                continue
            # Plain stretches in C; each record starting on a line with a quote as
            # csv.reader reads it (it may read on past the block).
            pos, size = 0, len(block)
            while pos < size:
                quote = block.find(b'"', pos)
                end = size if quote < 0 else max(pos, block.rfind(b"\n", pos, quote) + 1)
                if end > pos:
                    part = block[pos:end]
                    offset = offset + len(part) if self._fast(part) else self._slow(part, offset)
                    pos = end
                if quote >= 0:
                    pos, offset = self._quoted(block, pos, offset)
        return offset

    def _quoted(self, block: bytes, pos: int, offset: int) -> tuple[int, int]:
        """The record starting on the line at ``pos`` (which holds a quote); returns the
        position after it in ``block`` (its end when it read on) and the new offset."""
        buf = io.BytesIO(block)
        buf.seek(pos)
        stream, limit = self.stream, self.limit
        beyond = [False]

        def readline(size: int) -> bytes:
            line = buf.readline(size)
            if not line:
                beyond[0] = True
                line = stream.readline(size)
            return line

        offset = self._quoted_record(readline, _checked(readline(limit + 1), limit), offset)
        return (len(block) if beyond[0] else buf.tell()), offset

    def _quoted_record(self, readline: Callable[[int], bytes], line: bytes, offset: int
                       ) -> int:
        limit = self.limit
        self.cutter.rows += 1
        used = [len(line)]

        def lines() -> Iterator[str]:
            yield line.decode("utf-8", "surrogateescape")
            while nxt := readline(limit + 1):
                used.append(len(_checked(nxt, limit)))
                yield nxt.decode("utf-8", "surrogateescape")

        try:
            values = next(csv.reader(lines(), delimiter=self.d, strict=False))
        except (csv.Error, StopIteration):
            raise _Odd("CSV error") from None
        if len(values) == self.width:
            self.cutter.values.update(self.hasher.values(self._getter(values)))
        return offset + sum(used)

    def _getter(self, values: list[str]) -> Callable[[str], Any]:
        position = self.position

        def get(name: str) -> Any:
            i = position.get(name)
            return values[i] if i is not None else None
        return get

    def _fast(self, block: bytes) -> bool:
        lines = block.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        if max(map(len, lines), default=0) >= self.limit:
            return False  # the line by line pass says why (or that it is fine)
        self.cutter.rows += len(lines) - lines.count(b"") - lines.count(b"\r")
        if self.cells is None:
            return True
        # Lower-cased as one block; each distinct cell stripped (and non-ASCII ones
        # normalised as text) after: nearly every cell is ASCII and stripped already.
        found = self.cells.findall(block.lower())
        one_group = self.cells.groups == 1
        group, space = self.group, ASCII_SPACE
        values = self.cutter.values
        id_at, *key_at = self.wanted
        single = [id_at] + (key_at if len(key_at) == 1 else [])
        for at in single:
            if at is not None:
                got = set(found if one_group else map(itemgetter(group[at]), found))
                joined = b"\n".join(got)
                if joined.isascii() and len(joined.translate(None, space)) == len(joined) - (
                        len(got) - 1 if got else 0):
                    values.update(got)  # ASCII, no spaces at all: normalised already
                else:
                    values.update([v.strip(space) if v.isascii() else norm_cell(v)
                                   for v in got])
        if len(key_at) > 1 and None not in key_at:
            for row in found:
                parts = [norm_cell(row[group[i]]) for i in key_at]  # type: ignore[index]
                if all(parts):
                    values.add(KEY_SEP.join(parts))
        return True

    def _slow(self, block: bytes, offset: int) -> int:
        """Line by line, as the reader reads; a quoted record may read past the block."""
        buf = io.BytesIO(block)
        stream, limit, d, width, cutter = self.stream, self.limit, self.d, self.width, self.cutter

        def readline(size: int) -> bytes:
            return buf.readline(size) or stream.readline(size)

        while buf.tell() < len(block):
            line = _checked(readline(limit + 1), limit)
            if b'"' in line:
                offset = self._quoted_record(readline, line, offset)
                continue
            offset += len(line)
            body = line.rstrip(b"\r\n")
            if not body:
                continue  # blank line: not a record
            cutter.rows += 1
            text = body.decode("utf-8", "surrogateescape").split(d)
            if len(text) == width:
                cutter.values.update(self.hasher.values(self._getter(text)))
        return offset


def _cells_pattern(positions: list[int], sep: bytes) -> re.Pattern[bytes] | None:
    """A pattern whose groups are the cells at ``positions`` of each line (a line with
    fewer cells does not match: it is malformed, rejected whatever its cells)."""
    if not positions:
        return None
    d = re.escape(sep)
    cell = b"[^" + d + b"\\n]*"
    parts = [b"^", b"(?:" + cell + d + b"){%d}" % positions[0] if positions[0] else b"",
             b"(" + cell + b")"]
    for prev, pos in itertools.pairwise(positions):
        if pos - prev > 1:
            parts.append(b"(?:" + d + cell + b"){%d}" % (pos - prev - 1))
        parts.append(d + b"(" + cell + b")")
    return re.compile(b"".join(parts), re.MULTILINE)


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
                cutter.values.update(hasher.values(remap(data).get))
        offset += len(line)
    return offset

