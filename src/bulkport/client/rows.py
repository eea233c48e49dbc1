"""Counting the records of a CSV, NDJSON or JSON stream as its chunks go by.

Exports and rejected-record downloads report how many records they wrote,
without parsing the stream: NDJSON has one record per line, bulkport's JSON
array one per line between ``[`` and ``]``, and a CSV record ends at a newline
outside quotes (a quoted field may hold newlines; an escaped quote ``""``
toggles the quote state twice, so parity is enough).
"""

from __future__ import annotations

import zlib


class RowCounter:
    """Feed it the bytes written; :attr:`rows` is the number of complete records."""

    def __init__(self, fmt: str, *, gzipped: bool = False) -> None:
        self.fmt = fmt
        self.lines = 0
        self._quoted = False  # CSV: inside a quoted field at the end of the last chunk
        self._inflate = zlib.decompressobj(wbits=31) if gzipped else None

    def feed(self, chunk: bytes) -> None:
        if self._inflate is not None:
            chunk = self._inflate.decompress(chunk)
        # The common case of CSV too: no quoted field open or starting in the chunk.
        if self.fmt != "csv" or (not self._quoted and b'"' not in chunk):
            self.lines += chunk.count(b"\n")
        else:
            pieces = chunk.split(b"\n")
            for piece in pieces[:-1]:
                self._quoted ^= piece.count(b'"') % 2 == 1
                if not self._quoted:
                    self.lines += 1
            self._quoted ^= pieces[-1].count(b'"') % 2 == 1

    @property
    def rows(self) -> int:
        """Records, not counting a CSV header or the JSON array's bracket lines."""
        if self.fmt == "csv":
            return max(0, self.lines - 1)
        if self.fmt == "json":
            return max(0, self.lines - 2) if self.lines > 1 else 0
        return self.lines
