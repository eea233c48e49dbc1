"""Opening an input file for the pipeline: encoding, format, delimiter, column matching.

One function, :func:`open_reading`, used by the import worker and by the
preview, so both read a file exactly alike (docs/imports.md, "Encodings",
"Delimiters", "Column names").
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import IO

from bulkport.errors import MissingRequiredFields, UnreadableFile
from bulkport.pipeline import encodings, formats, headers, sources
from bulkport.resources.base import Resource


@dataclass
class Reading:
    """An opened file: how it is read, and its records."""

    format: formats.Format
    #: The codec the file is read with; ``bom`` when a byte-order mark told it.
    encoding: str
    bom: bool
    #: Set when the file was read as UTF-8 but its first block is not UTF-8.
    encoding_hint: str | None
    source: sources.Source
    #: CSV: the field each column feeds (None: ignored).
    fields: list[str | None] | None

    def missing(self, resource: Resource) -> list[str]:
        """The required fields no CSV column feeds (none for JSON formats)."""
        if self.fields is None:
            return []
        return headers.missing_required(self.fields, resource)

    def check_required(self, resource: Resource) -> None:
        """Raise :class:`MissingRequiredFields` for a CSV header lacking a required field.

        Such a header fails the job at once, instead of rejecting every record for
        the same reason; the encoding hint, when there is one, is part of the reason.
        """
        if self.fields is None or self.source.columns is None:
            return
        try:
            headers.check_required(self.source.columns, self.fields, resource)
        except MissingRequiredFields as exc:
            if self.encoding_hint is None:
                raise
            raise MissingRequiredFields(f"{exc.message}; {self.encoding_hint}",
                                        **exc.details) from None


def _hint(stream: IO[bytes]) -> str | None:
    """The encoding hint from the first block; None when the block cannot be read (the
    reader then fails the job with the reason, e.g. a truncated gzip)."""
    pos = stream.tell()
    try:
        block = formats.sniff(stream, formats.HEADER_BLOCK_BYTES)
    except UnreadableFile:
        with contextlib.suppress(OSError, EOFError, zlib.error):
            stream.seek(pos)
        return None
    guessed = encodings.guess(block)
    return encodings.hint_message(guessed) if guessed else None


def open_reading(stream: IO[bytes], resource: Resource, *, declared_format: str | None,
                 file_name: str | None, delimiter: str | None, encoding: str | None,
                 column_map: dict[str, str] | None, max_line_bytes: int) -> Reading:
    """Open a decompressed ``stream``; raises :class:`UnreadableFile` for a file that
    cannot be read (see :meth:`Reading.check_required` for the header's fields)."""
    head = formats.sniff(stream)
    if not head.strip():
        raise UnreadableFile("the file is empty")
    bom = encodings.from_bom(head)
    # A byte-order mark is the file's own word: it wins over a declared encoding.
    codec = bom or encoding or "utf-8"
    hint = None
    if codec != "utf-8":
        stream = encodings.as_utf8(stream, codec)
        head = formats.sniff(stream)
    elif bom is None and encoding is None:
        hint = _hint(stream)
    fmt = (formats.parse_format(declared_format) or formats.format_from_name(file_name)
           or formats.format_from_content(head))
    try:
        source = sources.open_source(
            stream, fmt, max_line_bytes=max_line_bytes,
            delimiter=delimiter or formats.delimiter_from_name(file_name),
            score=headers.scorer(resource, column_map))
    except UnreadableFile as exc:
        if hint is None:
            raise
        # "the CSV header is not valid UTF-8": say what it looks like instead.
        raise UnreadableFile(f"{exc.message}; {hint}") from None
    fields = None
    if source.columns is not None:
        fields = headers.match_columns(source.columns, resource, column_map)
    return Reading(fmt, codec, bom is not None, hint, source, fields)
