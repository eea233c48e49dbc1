"""Input formats: CSV (header row), NDJSON and JSON arrays, each optionally gzipped.

Detection of the format (declared, by name, by content) and the gzip layer are
here; the CSV reader is :mod:`bulkport.pipeline.csvreader`.

Every reader is a stream: memory stays bounded by the longest accepted line
(``max_line_bytes``), whatever the file size. A record that cannot be parsed is
yielded as a :class:`RawRecord` with ``malformed`` set; a file that cannot be
read at all raises :class:`UnreadableFile`.
"""

from __future__ import annotations

import codecs
import enum
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import orjson

from bulkport.errors import BadRequest, UnreadableFile
from bulkport.pipeline.csvreader import Scorer, guard, read_csv
from bulkport.pipeline.jsonarray import read_json
from bulkport.pipeline.types import RawRecord

GZIP_MAGIC = b"\x1f\x8b"
#: Bytes looked at to detect the format from the content.
SNIFF_BYTES = 4096
#: Bytes looked at for the CSV header when an upload is checked (the first block).
HEADER_BLOCK_BYTES = 64 * 1024


class Format(enum.StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"


_SUFFIXES = {".csv": Format.CSV, ".tsv": Format.CSV, ".tab": Format.CSV,
             ".ndjson": Format.NDJSON, ".jsonl": Format.NDJSON, ".json": Format.JSON}
#: Names that tell the delimiter too: tab-separated values are CSV with a tab.
_TAB_SUFFIXES = (".tsv", ".tab", ".tsv.gz", ".tab.gz")
#: The one format name that is not a :class:`Format`: CSV with a tab delimiter.
TSV = "tsv"


def parse_format(value: str | None) -> Format | None:
    """Validate a declared format; unknown values are a 400 listing the allowed ones."""
    if value is None or value == "":
        return None
    try:
        return Format(value.lower())
    except ValueError:
        allowed = [f.value for f in Format]
        raise BadRequest(
            f"unknown format {value!r}; use one of: {', '.join(allowed)}", allowed=allowed
        ) from None


def parse_import_format(value: str | None) -> tuple[Format | None, str | None]:
    """``(format, delimiter)`` of an import's declared format: ``tsv`` is CSV with a tab."""
    if value is not None and value.lower() == TSV:
        return Format.CSV, "\t"
    try:
        return parse_format(value), None
    except BadRequest as exc:
        allowed = [*exc.details["allowed"], TSV]
        raise BadRequest(f"unknown format {value!r}; use one of: {', '.join(allowed)}",
                         allowed=allowed) from None


def delimiter_from_name(name: str | None) -> str | None:
    """A tab for ``.tsv`` / ``.tab`` files (gzipped or not); None otherwise."""
    return "\t" if name and name.lower().endswith(_TAB_SUFFIXES) else None


def format_from_name(name: str | None) -> Format | None:
    if not name:
        return None
    low = name.lower()
    if low.endswith(".gz"):
        low = low[:-3]
    for suffix, fmt in _SUFFIXES.items():
        if low.endswith(suffix):
            return fmt
    return None


def format_from_content(head: bytes) -> Format:
    """Guess the format of (decompressed) leading bytes."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return Format.JSON
    if text.startswith(b"{"):
        first = text.split(b"\n", 1)[0].strip()
        # One object per line is NDJSON; an object spanning lines is a JSON document.
        try:
            orjson.loads(first)
        except orjson.JSONDecodeError:
            return Format.JSON
        return Format.NDJSON
    return Format.CSV


def open_decompressed(raw: IO[bytes], max_bytes: int | None = None) -> IO[bytes]:
    """Wrap ``raw`` in a gzip reader when it starts with the gzip magic number.

    With ``max_bytes``, reading past that many decompressed bytes raises
    :class:`UnreadableFile`: a gzip bomb fails its job instead of occupying a
    worker for hours.
    """
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC:
        inflated = gzip.GzipFile(fileobj=raw, mode="rb")
        if max_bytes is None:
            return inflated  # type: ignore[return-value]
        return _SizeLimited(inflated, max_bytes)  # type: ignore[return-value]
    return raw


class _SizeLimited(io.BufferedIOBase):
    """A gzip reader that fails once more than ``limit`` bytes came out of it."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit

    def _checked(self, data: bytes) -> bytes:
        if self._inner.tell() > self._limit:
            raise UnreadableFile(
                f"the file decompresses to more than {self._limit} bytes "
                "(BULKPORT_MAX_DECOMPRESSED_BYTES); split it or raise the limit")
        return data

    def _cap(self, size: int | None) -> int:
        """A read size that never inflates far past the limit in one go."""
        if size is None or size < 0:
            return max(1, self._limit + 1 - self._inner.tell())
        return size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._inner.read(self._cap(size)))

    def read1(self, size: int = -1) -> bytes:
        return self._checked(self._inner.read1(self._cap(size)))

    def readline(self, size: int | None = -1) -> bytes:
        return self._checked(self._inner.readline(self._cap(size)))


def sniff(stream: IO[bytes], size: int = SNIFF_BYTES) -> bytes:
    """Return leading bytes without consuming them (the stream must be seekable)."""
    pos = stream.tell()
    try:
        head = stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"the file could not be decompressed: {exc}") from None
    stream.seek(pos)
    return head


@dataclass
class Source:
    """A file opened for reading: its CSV header and delimiter (None for JSON), its records."""

    columns: list[str] | None
    delimiter: str | None
    records: Iterator[RawRecord]


def open_source(stream: IO[bytes], fmt: Format, *, max_line_bytes: int,
                delimiter: str | None = None, score: Scorer | None = None) -> Source:
    """The records of a decompressed UTF-8 stream (CSV: ``delimiter`` or detected)."""
    if fmt is Format.CSV:
        columns, found, records = read_csv(stream, max_line_bytes, delimiter, score)
        return Source(columns, found, records)
    if fmt is Format.NDJSON:
        return Source(None, None, guard(_read_ndjson(stream, max_line_bytes)))
    return Source(None, None, guard(_read_json(stream, max_line_bytes)))


def read_records(
    stream: IO[bytes], fmt: Format, *, max_line_bytes: int
) -> tuple[list[str] | None, Iterator[RawRecord]]:
    """Return ``(csv_columns_or_None, records)`` for a decompressed comma/auto stream."""
    source = open_source(stream, fmt, max_line_bytes=max_line_bytes)
    return source.columns, source.records


# --- NDJSON ------------------------------------------------------------------------------


def _read_ndjson(stream: IO[bytes], max_line_bytes: int) -> Iterator[RawRecord]:
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


# --- JSON array --------------------------------------------------------------------------


def _read_json(stream: IO[bytes], max_line_bytes: int) -> Iterator[RawRecord]:
    if sniff(stream).startswith(codecs.BOM_UTF8):
        stream.read(len(codecs.BOM_UTF8))
    head = sniff(stream).lstrip(b" \t\r\n")
    if not head:
        raise UnreadableFile("the file is empty")
    if not head.startswith((b"{", b"[")):
        raise UnreadableFile("a JSON file must hold an array of objects (or one object)")
    # A single object is a one-record file.
    yield from read_json(stream, max_line_bytes, in_array=head.startswith(b"["))
