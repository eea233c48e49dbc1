"""Where uploaded files and export files live.

The local backend keeps them under ``DATA_DIR``. Stored names are generated
(``<uuid>``), never taken from user input.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bulkport.errors import PayloadTooLarge

#: Copy chunk size (bytes): large enough to amortise syscalls, small enough to stay flat.
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    sha256: str


class LocalStorage:
    """Files in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    def new_key(self, suffix: str = "") -> str:
        return f"{uuid.uuid4()}{suffix}"

    def open_read(self, key: str) -> IO[bytes]:
        return self.path(key).open("rb")

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def save(self, chunks: Iterator[bytes], *, max_bytes: int) -> StoredFile:
        """Stream ``chunks`` to a new file; 413 as soon as ``max_bytes`` is passed."""
        with _Sink(self, max_bytes) as sink:
            for chunk in chunks:
                sink.write(chunk)
        return sink.stored

    async def save_async(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredFile:
        """Like :meth:`save` for an async stream (a request body)."""
        with _Sink(self, max_bytes) as sink:
            async for chunk in chunks:
                sink.write(chunk)
        return sink.stored


class _Sink:
    """A new stored file being written: counts, hashes, enforces the size limit."""

    def __init__(self, storage: LocalStorage, max_bytes: int) -> None:
        self.key = storage.new_key()
        self.final = storage.path(self.key)
        self.tmp = storage.path(self.key + ".part")
        self.max_bytes = max_bytes
        self.size = 0
        self.digest = hashlib.sha256()

    def __enter__(self) -> _Sink:
        self.out = self.tmp.open("wb")
        return self

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(
                f"the file is larger than the limit of {self.max_bytes} bytes",
                limit_bytes=self.max_bytes,
            )
        self.digest.update(chunk)
        self.out.write(chunk)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.out.close()
        if exc_type is None:
            os.replace(self.tmp, self.final)
        else:
            self.tmp.unlink(missing_ok=True)

    @property
    def stored(self) -> StoredFile:
        return StoredFile(self.key, self.size, self.digest.hexdigest())
