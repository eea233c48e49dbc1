"""Where uploaded files and export files live.

The local backend keeps them under ``DATA_DIR``; with ``BULKPORT_S3_BUCKET`` set,
both live in an S3-compatible bucket (:mod:`bulkport.storage_s3` for uploads,
:class:`S3ExportStorage` for export files), so that every instance reads what any
instance stored. Stored names are generated (``<uuid>``), never taken from user input.

:class:`Storage` is what the callers of upload storage (the API, the workers, the
sweep, the preview) rely on; :func:`upload_storage` picks the backend.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from bulkport.errors import PayloadTooLarge, Terminal, no_room

if TYPE_CHECKING:
    from bulkport.config import Settings

#: Copy chunk size (bytes): large enough to amortise syscalls, small enough to stay flat.
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    sha256: str


class StorageError(Terminal):
    """The storage backend refused an operation (upload, read, delete).

    A request meets it as a 503 (the bucket is unavailable: retry later); a job that
    meets it fails with the message as its reason (botocore already retried).
    """

    code = "storage_unavailable"
    status_code = 503


class Storage(Protocol):
    """Upload storage: :class:`LocalStorage` or :class:`~bulkport.storage_s3.S3Storage`."""

    def new_key(self, suffix: str = "") -> str:
        """A fresh key (never taken from user input)."""

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        """The stored bytes ``[start, end)``; ``tell()`` counts from the start of the file."""

    def delete(self, key: str) -> None:
        """Remove the file; a key already gone is no error."""

    def save(self, chunks: Iterator[bytes], *, max_bytes: int) -> StoredFile:
        """Store ``chunks`` under a new key; 413 as soon as ``max_bytes`` is passed."""

    async def save_async(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredFile:
        """Like :meth:`save` for an async stream (a request body)."""


def new_key(suffix: str = "") -> str:
    """A fresh storage key: a random UUID, so no two uploads of any instance collide."""
    return f"{uuid.uuid4()}{suffix}"


def check_key(key: str) -> str:
    """``key`` if it is a name this module could have made (no path, no dot file)."""
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """Files in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def new_key(self, suffix: str = "") -> str:
        return new_key(suffix)

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        """The stored bytes ``[start, end)`` as a binary stream (``end`` None: to the end).

        ``tell()`` counts from the start of the file, so byte offsets recorded
        while reading a range (checkpoints) name the same bytes in every backend.
        """
        f = self.path(key).open("rb")
        if start:
            f.seek(start)
        if end is None:
            return f
        return io.BufferedReader(_Range(f, start, end), CHUNK_BYTES)

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


class _Range(io.RawIOBase):
    """Bytes ``[start, end)`` of an open file, which it owns and closes."""

    def __init__(self, f: IO[bytes], start: int, end: int) -> None:
        self._f, self._pos, self._end = f, start, max(start, end)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self._f.readinto(view[: max(0, min(len(view), self._end - self._pos))])  # type: ignore[attr-defined]
        self._pos += n
        return int(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if offset == 0 and whence == io.SEEK_CUR:
            return self._pos  # tell()
        raise io.UnsupportedOperation("a stored range is read forward only")

    def close(self) -> None:
        self._f.close()
        super().close()


def counted(size: int, chunk: bytes, max_bytes: int) -> int:
    """``size`` plus ``chunk``; 413 as soon as a stored file passes ``max_bytes``."""
    size += len(chunk)
    if size > max_bytes:
        raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes",
                              limit_bytes=max_bytes)
    return size


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
        self.size = counted(self.size, chunk, self.max_bytes)
        self.digest.update(chunk)
        try:
            self.out.write(chunk)
        except OSError as exc:
            raise no_room(exc, "the upload directory") or exc from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.out.close()  # flushes the buffer: a full disk may show only now
            if exc_type is None:
                os.replace(self.tmp, self.final)
        except OSError as err:
            self.tmp.unlink(missing_ok=True)
            raise no_room(err, "the upload directory") or err from None
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)

    @property
    def stored(self) -> StoredFile:
        return StoredFile(self.key, self.size, self.digest.hexdigest())


# --- export files -------------------------------------------------------------------------
#
# An export is written to a local temporary file (``<key>.part`` in the export
# directory) and published only when complete: renamed in place (local) or
# uploaded (S3, where an object appears only once its upload has finished). A
# failed or cancelled export therefore never leaves a partial file behind.

#: Longest lifetime S3 accepts for a SigV4 presigned URL (seconds).
PRESIGN_MAX_SECONDS = 7 * 24 * 3600
_CONTENT_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
                  "json": "application/json", "gz": "application/gzip"}


class ExportStorage(LocalStorage):
    """Export files in a local directory; downloads go through the API."""

    def temp_path(self, key: str) -> Path:
        return self.path(key + ".part")

    def publish(self, tmp: Path, key: str) -> None:
        os.replace(tmp, self.path(key))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def presigned_url(self, key: str, *, expires_in: int) -> str | None:
        """A direct download URL, or ``None`` when downloads go through the API."""
        return None


class S3ExportStorage(ExportStorage):
    """Export files in an S3-compatible bucket; downloads are presigned URLs.

    Files are staged in the local export directory while they are written, then
    uploaded (multipart, streamed from disk: memory stays flat) and removed.
    """

    def __init__(self, root: Path, *, bucket: str, prefix: str = "", endpoint_url: str | None,
                 region: str | None, access_key_id: str | None,
                 secret_access_key: str | None) -> None:
        super().__init__(root)
        from bulkport.storage_s3 import s3_client

        self.bucket = bucket
        self.prefix = prefix
        self.client = s3_client(endpoint_url=endpoint_url, region=region,
                                access_key_id=access_key_id,
                                secret_access_key=secret_access_key)

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def publish(self, tmp: Path, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        # Stored with the object, so the presigned URL needs no response-* parameters.
        extra = {"ContentDisposition": f'attachment; filename="{key}"',
                 "ContentType": _CONTENT_TYPES.get(key.rsplit(".", 1)[-1],
                                                   "application/octet-stream")}
        try:
            self.client.upload_file(str(tmp), self.bucket, self.object_key(key), ExtraArgs=extra)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload to s3://{self.bucket} failed: {exc}") from exc
        tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"delete from s3://{self.bucket} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        return True  # objects appear only complete; their lifetime is the job's

    def presigned_url(self, key: str, *, expires_in: int) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)},
            ExpiresIn=max(1, min(expires_in, PRESIGN_MAX_SECONDS)),
        )
        return url


def export_storage(settings: Settings) -> ExportStorage:
    """The export backend the settings select: S3 when a bucket is configured."""
    if settings.s3_bucket:
        return S3ExportStorage(
            settings.export_dir, bucket=settings.s3_bucket, prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key)
    return ExportStorage(settings.export_dir)


def upload_storage(settings: Settings) -> Storage:
    """The upload backend the settings select: the bucket when one is set, else DATA_DIR."""
    if settings.s3_bucket:
        from bulkport.storage_s3 import S3Storage  # boto3 only where a bucket is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.upload_dir)
