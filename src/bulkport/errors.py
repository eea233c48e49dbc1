"""One exception hierarchy for bulkport.

Per-record problems are data (:class:`bulkport.pipeline.types.RecordError`),
never exceptions. Exceptions are for job-level and request-level failures, and
their class says whether retrying can help.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class BulkportError(Exception):
    """A bulkport operation failed."""

    code = "error"
    status_code = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip())
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details


class Terminal(BulkportError):
    """Marker: retrying cannot help; the job fails with this reason."""


class BadRequest(BulkportError):
    """The request is invalid."""

    code = "bad_request"
    status_code = 400


class NotFound(BulkportError):
    """No such resource."""

    code = "not_found"
    status_code = 404


class Conflict(BulkportError):
    """The request conflicts with the current state."""

    code = "conflict"
    status_code = 409


class IdempotencyConflict(Conflict):
    """This Idempotency-Key was already used with a different request."""

    code = "idempotency_conflict"


class PayloadTooLarge(BulkportError):
    """The upload is larger than the configured limit."""

    code = "payload_too_large"
    status_code = 413


class UnreadableFile(Terminal):
    """The file could not be read as the declared format."""

    code = "unreadable_file"


class MissingRequiredFields(UnreadableFile):
    """The CSV header, once matched to the resource's fields, lacks a required field."""

    code = "missing_required_fields"
    status_code = 422


class UnprocessableFile(BulkportError):
    """The file sent for a preview cannot be read (as its import would fail)."""

    code = "unreadable_file"
    status_code = 422


class FetchFailed(Terminal):
    """The remote file could not be downloaded."""

    code = "fetch_failed"


class LeaseLost(BulkportError):
    """This worker no longer owns the job (its lease expired or it was cancelled)."""

    code = "lease_lost"


class TooManyExports(BulkportError):
    """Every export connection is busy; retry in a few seconds."""

    code = "too_many_exports"
    status_code = 503


class ExportExpired(BulkportError):
    """The export file has expired; start a new export."""

    code = "export_expired"
    status_code = 410


class UnsupportedMediaType(BulkportError):
    """The request body is not of a media type this endpoint reads."""

    code = "unsupported_media_type"
    status_code = 415


class InsufficientStorage(Terminal):
    """The device holding bulkport's files is full (or a file-size limit was reached)."""

    code = "insufficient_storage"
    status_code = 507


#: ``errno`` values of a write refused for lack of room: a full device (ENOSPC), a full
#: quota (EDQUOT), or a file-size limit of the process (EFBIG, ``RLIMIT_FSIZE``).
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def no_room(exc: BaseException, where: str) -> InsufficientStorage | None:
    """An :class:`InsufficientStorage` for an ``OSError`` that means "no room", else ``None``."""
    if not isinstance(exc, OSError) or exc.errno not in NO_ROOM_ERRNOS:
        return None
    return InsufficientStorage(
        f"no space left on the device holding {where} ({os.strerror(exc.errno or 0)}); "
        "free some space and retry", errno=exc.errno)
