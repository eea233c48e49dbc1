"""Uploads in an S3-compatible bucket: streamed in as a multipart upload, read back ranged.

With ``BULKPORT_S3_BUCKET`` set, every instance stores uploads and ``file_url``
downloads here (under ``BULKPORT_S3_UPLOAD_PREFIX``), so a worker of any instance
reads the file an API instance received, and no instance keeps it on disk.

Writing (:meth:`S3Storage.save`, :meth:`S3Storage.save_async`): the bytes are
counted, hashed and held to the size limit as they arrive, buffered up to one
part (``BULKPORT_S3_PART_BYTES``) and sent as a part of a multipart upload, so
memory holds at most about two parts per upload whatever the file's size. A file
smaller than one part is one ``PutObject``. On any failure (413, a client gone,
the bucket refusing) the multipart upload is aborted: no object and no pending
parts remain. boto3 is synchronous: the async variant sends each part from a
thread, so the event loop never waits on the bucket.

Reading (:meth:`S3Storage.open_read`): one streamed ranged ``GET`` for the bytes
``[start, end)``. ``tell()`` counts from the start of the object, as it does for
a local file. A seek (format sniffing rewinds to the start) or a stream broken
mid-way opens a new ranged ``GET`` at the byte needed: nothing is read twice
beyond what a rewind asks for.

Every failure of the bucket is a :class:`~bulkport.storage.StorageError`: a 503
for a request, a failed job's reason in a worker.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bulkport.storage import (
    CHUNK_BYTES,
    StorageError,
    StoredFile,
    check_key,
    counted,
    new_key,
)

if TYPE_CHECKING:
    from bulkport.config import Settings

log = logging.getLogger(__name__)

#: S3 accepts at most this many parts in one multipart upload.
MAX_PARTS = 10_000
#: Ranged GETs a read makes at one offset before it gives up (a stream broken mid-way).
READ_ATTEMPTS = 3


def s3_client(*, endpoint_url: str | None, region: str | None, access_key_id: str | None,
              secret_access_key: str | None) -> Any:
    """A boto3 S3 client (thread-safe: one per storage object is enough)."""
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=region,
        aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
        # Path-style addressing works with every S3-compatible server (MinIO, moto...).
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 5, "mode": "standard"}),
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Storage:
    """Uploads as objects ``<prefix><key>`` of one bucket (the :class:`Storage` protocol)."""

    def __init__(self, client: Any, bucket: str, prefix: str, part_bytes: int) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.s3_bucket
        client = s3_client(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                           access_key_id=settings.s3_access_key_id,
                           secret_access_key=settings.s3_secret_access_key)
        return cls(client, settings.s3_bucket, settings.s3_upload_prefix,
                   settings.s3_part_bytes)

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{check_key(key)}"

    def call(self, what: str, key: str, operation: Callable[..., Any], **params: Any) -> Any:
        """``operation`` on the object of ``key``; a refusal becomes a StorageError."""
        try:
            return operation(Bucket=self.bucket, Key=self.object_key(key), **params)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"{what} s3://{self.bucket}/{self.object_key(key)} failed: "
                               f"{exc}", bucket=self.bucket) from None

    def new_key(self, suffix: str = "") -> str:
        return new_key(suffix)

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        return io.BufferedReader(_ObjectReader(self, key, start, end), CHUNK_BYTES)

    def delete(self, key: str) -> None:
        self.call("deleting", key, self.client.delete_object)  # a missing key is no error

    def save(self, chunks: Iterator[bytes], *, max_bytes: int) -> StoredFile:
        upload = _Upload(self, max_bytes)
        try:
            for chunk in chunks:
                for part in upload.add(chunk):
                    upload.send(part)
            upload.finish()
        except BaseException:
            upload.abort()
            raise
        return upload.stored

    async def save_async(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredFile:
        from anyio import CancelScope, to_thread

        upload = _Upload(self, max_bytes)
        try:
            async for chunk in chunks:
                for part in upload.add(chunk):
                    await to_thread.run_sync(upload.send, part)
            await to_thread.run_sync(upload.finish)
        except BaseException:
            # Shielded: a cancelled request (client gone) must still abort the upload.
            with CancelScope(shield=True):
                await to_thread.run_sync(upload.abort)
            raise
        return upload.stored


class _Upload:
    """One object being written: counted, hashed, held to the limit, sent part by part."""

    def __init__(self, storage: S3Storage, max_bytes: int) -> None:
        self.storage = storage
        self.key = storage.new_key()
        self.max_bytes = max_bytes
        # S3 takes at most MAX_PARTS parts: a limit that needs more gets larger parts.
        self.part_bytes = max(storage.part_bytes, math.ceil(max_bytes / MAX_PARTS))
        self.size = 0
        self.digest = hashlib.sha256()
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def add(self, chunk: bytes) -> list[bytes]:
        """Take ``chunk``; the full parts to send (each exactly one part size)."""
        self.size = counted(self.size, chunk, self.max_bytes)
        self.digest.update(chunk)
        self.buffer += chunk
        parts = []
        while len(self.buffer) >= self.part_bytes:
            with memoryview(self.buffer) as view:  # one copy, not two (a slice, then bytes)
                parts.append(bytes(view[:self.part_bytes]))
            del self.buffer[:self.part_bytes]
        return parts

    def send(self, part: bytes) -> None:
        s = self.storage
        if self.upload_id is None:
            created = s.call("starting the upload of", self.key,
                             s.client.create_multipart_upload)
            self.upload_id = str(created["UploadId"])
        number = len(self.parts) + 1
        sent = s.call("uploading a part of", self.key, s.client.upload_part, Body=part,
                      PartNumber=number, UploadId=self.upload_id)
        self.parts.append({"ETag": sent["ETag"], "PartNumber": number})

    def finish(self) -> None:
        s = self.storage
        if self.upload_id is None:  # smaller than one part: one request
            s.call("uploading", self.key, s.client.put_object, Body=bytes(self.buffer))
            return
        if self.buffer:
            self.send(bytes(self.buffer))
            self.buffer = bytearray()
        s.call("completing the upload of", self.key, s.client.complete_multipart_upload,
               UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
        self.upload_id = None  # complete: nothing left to abort

    def abort(self) -> None:
        """Drop the parts sent so far (a completed object is the caller's to delete)."""
        self.buffer = bytearray()
        if self.upload_id is None:
            return
        s = self.storage
        try:
            s.call("aborting the upload of", self.key, s.client.abort_multipart_upload,
                   UploadId=self.upload_id)
        except StorageError as exc:  # the first failure is the one to report
            log.warning("%s (the bucket's lifecycle rule must drop the parts)", exc.message)
        self.upload_id = None

    @property
    def stored(self) -> StoredFile:
        return StoredFile(self.key, self.size, self.digest.hexdigest())


class _ObjectReader(io.RawIOBase):
    """Bytes ``[start, end)`` of an object, streamed by ranged GETs."""

    def __init__(self, storage: S3Storage, key: str, start: int, end: int | None) -> None:
        self._storage, self._key = storage, key
        self._start, self._pos, self._end = start, start, end
        self._body: Any = None
        self._eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _open(self) -> Any:
        """The body of a GET from the current position; None at or past the end."""
        if self._end is not None and self._pos >= self._end:
            return None
        last = "" if self._end is None else str(self._end - 1)
        s = self._storage
        try:
            return s.client.get_object(Bucket=s.bucket, Key=s.object_key(self._key),
                                       Range=f"bytes={self._pos}-{last}")["Body"]
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and _error_code(exc) == "InvalidRange":
                return None  # at the end (or an empty object)
            raise self._failed(str(exc)) from None

    def _failed(self, why: str) -> StorageError:
        s = self._storage
        return StorageError(f"reading s3://{s.bucket}/{s.object_key(self._key)} failed: {why}",
                            bucket=s.bucket)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = len(view) if self._end is None else min(len(view), self._end - self._pos)
        if want <= 0 or self._eof:
            return 0
        failure: Exception | None = None
        for _ in range(READ_ATTEMPTS):
            if self._body is None:
                self._body = self._open()
                if self._body is None:
                    self._eof = True
                    return 0
            try:
                data = self._body.read(want)
            except (BotoCoreError, OSError) as exc:  # broken mid-way: resume at _pos
                failure = exc
                self._drop_body()
                continue
            if not data:
                self._eof = True
                self._drop_body()
                return 0
            view[:len(data)] = data
            self._pos += len(data)
            return len(data)
        raise self._failed(f"{READ_ATTEMPTS} attempts at byte {self._pos}: {failure}")

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a stored object is sought from its start only")
        if offset != self._pos:
            if offset < self._start or (self._end is not None and offset > self._end):
                raise io.UnsupportedOperation("a seek outside the stored range")
            self._drop_body()
            self._pos, self._eof = offset, False
        return self._pos

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
