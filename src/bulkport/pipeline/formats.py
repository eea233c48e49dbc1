"""Input formats and their detection: CSV (header row), NDJSON and JSON arrays.

A format is declared (``format``, ``tsv`` being CSV with a tab), told by the
file name (``.csv``, ``.tsv``, ``.ndjson``, ``.jsonl``, ``.json``, each maybe
``.gz``) or guessed from the first (decompressed) bytes, in that order. The
gzip layer and its bound are :mod:`bulkport.pipeline.decompress`; the reader of
each format is chosen in :mod:`bulkport.pipeline.sources`.
"""

from __future__ import annotations

import enum
import zlib
from typing import IO

import orjson

from bulkport.errors import BadRequest, UnreadableFile

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


def sniff(stream: IO[bytes], size: int = SNIFF_BYTES) -> bytes:
    """Return leading bytes without consuming them (the stream must be seekable)."""
    pos = stream.tell()
    try:
        head = stream.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"the file could not be decompressed: {exc}") from None
    stream.seek(pos)
    return head
