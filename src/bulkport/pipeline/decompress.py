"""The gzip layer of an input file, and its bound on decompressed bytes.

A file starting with the gzip magic number is read through a gzip reader. With
a bound (``BULKPORT_MAX_DECOMPRESSED_BYTES``), reading past that many
decompressed bytes raises :class:`UnreadableFile`: a gzip bomb (a few kilobytes
inflating to terabytes) fails its job instead of occupying a worker for hours.
"""

from __future__ import annotations

import gzip
import io
from typing import IO

from bulkport.errors import UnreadableFile

GZIP_MAGIC = b"\x1f\x8b"


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
