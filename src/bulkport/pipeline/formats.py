"""Input formats: CSV (header row), NDJSON and JSON arrays, each optionally gzipped.

Every reader is a stream: memory stays bounded by the longest accepted line
(``max_line_bytes``), whatever the file size. A record that cannot be parsed is
yielded as a :class:`RawRecord` with ``malformed`` set; a file that cannot be
read at all raises :class:`UnreadableFile`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import enum
import gzip
import io
import itertools
import zlib
from collections.abc import Iterator
from typing import IO

import orjson

from bulkport.errors import BadRequest, UnreadableFile
from bulkport.pipeline.jsonarray import read_json
from bulkport.pipeline.types import RawRecord

GZIP_MAGIC = b"\x1f\x8b"
#: Bytes looked at to detect the format from the content.
SNIFF_BYTES = 4096


class Format(enum.StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"


_SUFFIXES = {".csv": Format.CSV, ".ndjson": Format.NDJSON, ".jsonl": Format.NDJSON,
             ".json": Format.JSON}


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


def sniff(stream: IO[bytes]) -> bytes:
    """Return leading bytes without consuming them (the stream must be seekable)."""
    pos = stream.tell()
    try:
        head = stream.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"the file could not be decompressed: {exc}") from None
    stream.seek(pos)
    return head


def read_records(
    stream: IO[bytes], fmt: Format, *, max_line_bytes: int
) -> tuple[list[str] | None, Iterator[RawRecord]]:
    """Return ``(csv_columns_or_None, records)`` for a decompressed stream."""
    if fmt is Format.CSV:
        return _read_csv(stream, max_line_bytes)
    if fmt is Format.NDJSON:
        return None, _guard(_read_ndjson(stream, max_line_bytes))
    return None, _guard(_read_json(stream, max_line_bytes))


def _guard(records: Iterator[RawRecord]) -> Iterator[RawRecord]:
    """Turn decompression failures (truncated gzip, bad CRC) into a job-level error."""
    try:
        yield from records
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"the compressed file is damaged or truncated: {exc}") from None


# --- CSV ---------------------------------------------------------------------------------


def _read_csv(stream: IO[bytes], max_line_bytes: int) -> tuple[list[str], Iterator[RawRecord]]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    csv.field_size_limit(max_line_bytes)
    lines = _Lines(text, max_line_bytes)
    try:
        header = next(csv.reader(lines, strict=False))
    except StopIteration:
        raise UnreadableFile("the file is empty: a CSV file needs a header row") from None
    except (csv.Error, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"the CSV header could not be read: {exc}") from None
    columns = [h.strip() for h in header]
    if columns and columns[0].startswith("\ufeff"):
        columns[0] = columns[0][1:].strip()
    if not any(columns):
        raise UnreadableFile("the CSV header row is empty")
    if not _is_utf8(columns):
        raise UnreadableFile("the CSV header is not valid UTF-8")
    seen: set[str] = set()
    dupes = sorted({c for c in columns if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if dupes:
        raise UnreadableFile(f"the CSV header repeats column(s): {', '.join(dupes)}")
    return columns, _guard(_csv_rows(text, lines, columns))


class _Lines:
    """The physical lines of ``text`` for csv.reader, none longer than ``limit`` characters.

    csv.reader takes whatever one line holds: a file without line breaks (or a
    gzip bomb of NUL bytes) went into memory whole, gigabytes of it. A longer line
    is skipped instead; csv.reader passes the csv.Error raised here on as one
    malformed record and then reads on from the next line.
    """

    def __init__(self, text: io.TextIOWrapper, limit: int) -> None:
        self._readline = text.readline
        self._limit = limit

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._readline(self._limit + 1)
        if not line:
            raise StopIteration
        if len(line) > self._limit and line[-1] not in "\r\n":
            while (rest := self._readline(self._limit)) and rest[-1] not in "\r\n":
                pass
            raise csv.Error(f"the line is longer than {self._limit} characters")
        return line


def _csv_rows(text: io.TextIOWrapper, lines: _Lines, columns: list[str]
              ) -> Iterator[RawRecord]:
    try:
        yield from _csv_records(lines, columns)
    finally:
        # A collected TextIOWrapper closes the stream under it; the caller owns that stream.
        # (When the caller closed it first, there is nothing left to protect.)
        with contextlib.suppress(ValueError):
            text.detach()


def _csv_records(lines: _Lines, columns: list[str]) -> Iterator[RawRecord]:
    """Records of a CSV body.

    A line without a double quote is split here and yielded as the line itself
    (``data`` is a ``str``: the prepare stage validates plain lines in one regex
    pass); a line with quotes goes through csv.reader, which reads on through
    quoted line breaks, and is yielded as a list of values.
    """
    width = len(columns)
    commas = width - 1
    row = 0
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except csv.Error as exc:
            row += 1
            yield RawRecord(row, None, None, f"the CSV row could not be parsed: {exc}")
            continue
        if '"' in line:
            try:
                values = next(csv.reader(itertools.chain((line,), lines), strict=False))
            except csv.Error as exc:
                row += 1
                yield RawRecord(row, None, None, f"the CSV row could not be parsed: {exc}")
                continue
            row += 1
            if len(values) != width:
                yield RawRecord(
                    row, None, {"_raw": values if _is_utf8(values) else _repair(values)},
                    f"the row has {len(values)} columns; the header has {width}",
                )
            elif not _is_utf8(values):
                yield RawRecord(row, None, {"_raw": _repair(values)}, "the row is not valid UTF-8")
            else:
                yield RawRecord(row, values, None)
            continue
        line = line.rstrip("\r\n")
        if not line:
            continue  # blank line: not a record
        row += 1
        if line.count(",") != commas:
            values = line.split(",")
            yield RawRecord(
                row, None, {"_raw": values if _is_utf8(values) else _repair(values)},
                f"the row has {len(values)} columns; the header has {width}",
            )
        elif not line.isascii() and not _is_utf8([line]):
            yield RawRecord(row, None, {"_raw": _repair(line.split(","))},
                            "the row is not valid UTF-8")
        else:
            yield RawRecord(row, line, None)


def _is_utf8(values: list[str]) -> bool:
    """True unless a value holds bytes that were not UTF-8 (kept as surrogates)."""
    joined = "".join(values)
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _repair(values: list[str]) -> list[str]:
    return [
        v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in values
    ]


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
