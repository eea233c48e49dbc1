"""Request parameters of the job routes: job ids, list cursors, the idempotency key,
and the query models of the import routes (declared, so the OpenAPI document
describes them; the streaming export's are in :mod:`bulkport.api.export_params`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header
from pydantic import BaseModel, Field

from bulkport.api.schemas import decode_cursor
from bulkport.errors import BadRequest, NotFound
from bulkport.jobs.status import JobStatus

#: C0 controls and DEL: PostgreSQL text refuses NUL, and none belongs in an id, a URL
#: or a file name.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def valid_job_id(job_id: str) -> str:
    """A job id that cannot exist (e.g. holding NUL, which PostgreSQL refuses) is a 404.

    Import and export routes share it, so the message names no kind of job.
    """
    if CONTROL_CHARS.search(job_id):
        raise NotFound(f"no job with id {job_id!r}")
    return job_id


async def _job_id(job_id: str) -> str:
    # ``async``: FastAPI runs a plain ``def`` dependency in the threadpool, a thread
    # hand-off per request for a regular expression (bench/README.md, "Status reads").
    return valid_job_id(job_id)


JobId = Annotated[str, Depends(_job_id)]


def whole_number(value: str, low: int, high: int) -> int | None:
    """``value`` as an integer from ``low`` to ``high``; None when it is not one.

    ``isdigit()`` also admits digits ``int()`` refuses (superscripts): those are
    None too, so that the caller answers them with its 400.
    """
    try:
        number = int(value) if value.isdigit() else None
    except ValueError:
        return None
    return number if number is not None and low <= number <= high else None


def list_cursor(cursor: str) -> tuple[datetime, str]:
    """Decode a job list cursor: ``(created_at, id)`` of the last job of a page."""
    created, job_id = decode_cursor(cursor, 2)
    try:
        if not isinstance(created, str) or not isinstance(job_id, str):
            raise ValueError
        return datetime.fromisoformat(created), valid_job_id(job_id)
    except (ValueError, NotFound):
        raise BadRequest("invalid cursor; pass the next_cursor of a previous page") from None


#: ``Idempotency-Key``: an empty key would be one key shared by every client that
#: sends the header blank, so it is refused (400) like an over-long one.
IdempotencyKey = Annotated[str | None, Header(
    min_length=1, max_length=255,
    description="Same key + same request: the existing job (200); "
                "same key + another request: 409 idempotency_conflict")]


class ImportListQuery(BaseModel):
    """``GET /v1/imports``: filters and pagination."""

    status: JobStatus | None = None
    resource: str | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class ErrorPageQuery(BaseModel):
    """``GET /v1/imports/{id}/errors``: a JSON page, or the whole NDJSON/CSV download."""

    format: str = Field("json", pattern="^(json|ndjson|csv)$")
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None
    code: str | None = Field(
        None, max_length=64, pattern="^[a-z0-9_]+$",
        description="Only errors of this code (e.g. invalid_email_format); with csv/ndjson, "
                    "only the records having it")
