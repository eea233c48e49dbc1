"""The CSV reader: a header row, then one record per row; RFC 4180 quoting.

The delimiter is one of :data:`DELIMITERS`, given or detected from the header
line (:func:`detect_delimiter`). A line without a double quote is split here
and handed on as the line itself (the prepare stage validates plain lines in
one regex pass, :mod:`bulkport.resources.fastcsv`); a line with quotes goes
through ``csv.reader``. Memory stays bounded by the longest accepted line.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from bulkport.errors import BadRequest, UnreadableFile
from bulkport.pipeline.types import RawRecord

#: The delimiters a CSV file may use, in the order ties are broken.
DELIMITERS = (",", ";", "\t", "|")
#: Names accepted for a delimiter besides the character itself (a tab is awkward to type).
DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}

#: ``score(columns) -> number of columns that feed a resource field``.
Scorer = Callable[[list[str]], int]


def parse_delimiter(value: str | None) -> str | None:
    """Validate a declared delimiter; anything else is a 400 listing the allowed ones."""
    if value is None or value == "":
        return None
    if value in DELIMITERS:
        return value
    named = DELIMITER_NAMES.get(value.lower())
    if named is None:
        raise BadRequest(f"unknown delimiter {value[:20]!r}; use one of: , ; | tab",
                         allowed=[",", ";", "tab", "|"])
    return named


def detect_delimiter(line: str, score: Scorer | None = None) -> str:
    """The delimiter of a header line.

    The rule: the candidate whose split of the header gives the most columns
    matching resource fields; ties (none matches, say) go to the one giving the
    most columns, then to the order of :data:`DELIMITERS` (comma first). The
    header is the one line whose content is known (field names), so this
    cannot be misled by commas in the data the way a frequency count over
    sample rows (csv.Sniffer) is, and one line is enough.
    """
    best = (-1, -1, 0)
    choice = ","
    for rank, d in enumerate(DELIMITERS):
        try:
            columns = [c.strip() for c in next(csv.reader([line], delimiter=d, strict=False))]
        except (csv.Error, StopIteration):
            continue
        key = (score(columns) if score else 0, len(columns), -rank)
        if key > best:
            best, choice = key, d
    return choice


def header_from_head(head: bytes, delimiter: str | None = None,
                     score: Scorer | None = None, encoding: str = "utf-8"
                     ) -> tuple[list[str], str] | None:
    """``(header, delimiter)`` from the first block of a file, or None when not there.

    None for a header line that does not end within the block or cannot be
    decoded: the worker reads the whole file and fails the job with the reason.
    """
    end = head.find(b"\n")
    if end < 0:
        return None
    try:
        line = head[:end + 1].decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    d = delimiter or detect_delimiter(line, score)
    try:
        header = next(csv.reader([line], delimiter=d, strict=False), [])
    except csv.Error:
        return None
    return _clean_header(header), d


def _clean_header(header: list[str]) -> list[str]:
    columns = [h.strip() for h in header]
    if columns and columns[0].startswith("\ufeff"):
        columns[0] = columns[0][1:].strip()
    return columns


def guard(records: Iterator[RawRecord]) -> Iterator[RawRecord]:
    """Turn decompression failures (truncated gzip, bad CRC) into a job-level error."""
    try:
        yield from records
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"the compressed file is damaged or truncated: {exc}") from None


def read_csv(stream: IO[bytes], max_line_bytes: int, delimiter: str | None = None,
             score: Scorer | None = None) -> tuple[list[str], str, Iterator[RawRecord]]:
    """``(header, delimiter, records)`` of a UTF-8 CSV stream."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    csv.field_size_limit(max_line_bytes)
    lines = _Lines(text, max_line_bytes)
    try:
        first = next(lines)
        d = delimiter or detect_delimiter(first, score)
        header = next(csv.reader(itertools.chain((first,), lines), delimiter=d, strict=False))
    except StopIteration:
        raise UnreadableFile("the file is empty: a CSV file needs a header row") from None
    except (csv.Error, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"the CSV header could not be read: {exc}") from None
    columns = _clean_header(header)
    if not any(columns):
        raise UnreadableFile("the CSV header row is empty")
    if not is_utf8(columns):
        raise UnreadableFile("the CSV header is not valid UTF-8")
    seen: set[str] = set()
    dupes = sorted({c for c in columns if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if dupes:
        raise UnreadableFile(f"the CSV header repeats column(s): {', '.join(dupes)}")
    return columns, d, guard(_csv_rows(text, lines, columns, d))


def read_csv_body(stream: IO[bytes], columns: Sequence[str], delimiter: str,
                  max_line_bytes: int) -> Iterator[RawRecord]:
    """The records of a UTF-8 CSV body that has no header line (a chunk of a file whose
    header was read before): counted from row 1, read exactly as :func:`read_csv` reads."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    csv.field_size_limit(max_line_bytes)
    return guard(_csv_rows(text, _Lines(text, max_line_bytes), list(columns), delimiter))


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


def _csv_rows(text: io.TextIOWrapper, lines: _Lines, columns: list[str], delimiter: str
              ) -> Iterator[RawRecord]:
    try:
        yield from _csv_records(lines, columns, delimiter)
    finally:
        # A collected TextIOWrapper closes the stream under it; the caller owns that stream.
        # (When the caller closed it first, there is nothing left to protect.)
        with contextlib.suppress(ValueError):
            text.detach()


def _csv_records(lines: _Lines, columns: Sequence[str], d: str) -> Iterator[RawRecord]:
    """Records of a CSV body.

    A line without a double quote is split here and yielded as the line itself
    (``data`` is a ``str``: the prepare stage validates plain lines in one regex
    pass); a line with quotes goes through csv.reader, which reads on through
    quoted line breaks, and is yielded as a list of values.
    """
    width = len(columns)
    separators = width - 1
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
                values = next(csv.reader(itertools.chain((line,), lines), delimiter=d,
                                         strict=False))
            except csv.Error as exc:
                row += 1
                yield RawRecord(row, None, None, f"the CSV row could not be parsed: {exc}")
                continue
            row += 1
            if len(values) != width:
                yield RawRecord(
                    row, None, {"_raw": values if is_utf8(values) else _repair(values)},
                    f"the row has {len(values)} columns; the header has {width}",
                )
            elif not is_utf8(values):
                yield RawRecord(row, None, {"_raw": _repair(values)}, "the row is not valid UTF-8")
            else:
                yield RawRecord(row, values, None)
            continue
        line = line.rstrip("\r\n")
        if not line:
            continue  # blank line: not a record
        row += 1
        if line.count(d) != separators:
            values = line.split(d)
            yield RawRecord(
                row, None, {"_raw": values if is_utf8(values) else _repair(values)},
                f"the row has {len(values)} columns; the header has {width}",
            )
        elif not line.isascii() and not is_utf8([line]):
            yield RawRecord(row, None, {"_raw": _repair(line.split(d))},
                            "the row is not valid UTF-8")
        else:
            yield RawRecord(row, line, None)


def is_utf8(values: list[str]) -> bool:
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
