"""The query of ``GET /v1/exports``, declared so that the OpenAPI document describes it.

One route has two meanings: with ``resource`` it streams an export, without it
lists export jobs. Some names mean something else in each (``limit``: records
streamed, or jobs per page; ``status``: a filter of articles, or the jobs'
status), and a streaming export takes the resource's filters as any other
parameter, so the model keeps unknown parameters (``extra="allow"``) and the two
readings check them: an unknown filter, or a listing parameter that does not
exist, is a 400 naming what is allowed.

FastAPI gives a parameter declared once its last value when it is repeated; a
streaming export refuses a repeated ``resource``, ``format`` or ``limit``
rather than guess, so :meth:`ExportQuery.spec` counts them in the raw query.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import QueryParams

from bulkport.api.params import list_cursor, whole_number
from bulkport.errors import BadRequest
from bulkport.jobs.status import JobStatus
from bulkport.pipeline.export_spec import MAX_LIMIT, ExportSpec, parse_spec

#: The parameters of a page of export jobs.
LIST_PARAMS = ("status", "limit", "cursor")
#: Jobs per page, when not given.
DEFAULT_PAGE = 20
#: Most jobs per page.
MAX_PAGE = 100
_ONCE = ("resource", "format", "limit")


class ExportQuery(BaseModel):
    """``GET /v1/exports``: a streaming export (with ``resource``), or a page of export jobs."""

    # Streaming: every other parameter is a filter of the resource (role=admin, tag=…).
    model_config = ConfigDict(extra="allow")

    resource: str | None = Field(
        None, description="Stream this resource (users, articles, comments); without it, "
                          "the export jobs are listed")
    format: str | None = Field(None, description="Streaming: ndjson (default), csv or json")
    fields: list[str] | None = Field(
        None, description="Streaming: the fields to export, comma-separated or repeated; "
                          "all by default")
    limit: str | None = Field(
        None, description=f"Streaming: at most this many records (1 to {MAX_LIMIT}). "
                          f"Listing: jobs per page (1 to {MAX_PAGE}, default {DEFAULT_PAGE})")
    status: list[str] | None = Field(
        None, description="Listing: only jobs of this status. Streaming articles: a filter "
                          "(repeat for any of)")
    cursor: str | None = Field(None, description="Listing: the next_cursor of a previous page")

    @property
    def streams(self) -> bool:
        return "resource" in self.model_fields_set

    def spec(self, raw: QueryParams) -> ExportSpec:
        """The streaming export asked for; 400 naming what is allowed if it cannot be."""
        for name in _ONCE:
            given = len(raw.getlist(name))
            if given > 1:
                raise BadRequest(f"give {name} once, not {given} times")
        filters = dict(self.model_extra or {})
        if self.status is not None:  # a filter here (articles), like any other name
            filters["status"] = self.status
        if self.cursor is not None:  # a listing parameter: an unknown filter here
            filters["cursor"] = self.cursor
        return parse_spec(self.resource, self.format, self.fields, filters, limit=self.limit)

    def job_page(self) -> tuple[str | None, int, tuple[datetime, str] | None]:
        """``(status, limit, after)`` of a page of export jobs; 400 for anything else."""
        unknown = sorted((self.model_fields_set | set(self.model_extra or {}))
                         - set(LIST_PARAMS))
        if unknown:
            raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}: listing export jobs "
                             "takes status, limit and cursor; add resource=… to stream an "
                             "export", allowed=[*LIST_PARAMS, "resource"])
        status = self.status[-1] if self.status else None  # repeated: the last one counts
        if status is not None and status not in {s.value for s in JobStatus}:
            allowed = [s.value for s in JobStatus]
            raise BadRequest(f"unknown status {status!r}; use one of: {', '.join(allowed)}",
                             allowed=allowed)
        return status, _page_size(self.limit), (list_cursor(self.cursor) if self.cursor
                                                else None)


def _page_size(raw: str | None) -> int:
    size = whole_number(raw if raw is not None else str(DEFAULT_PAGE), 1, MAX_PAGE)
    if size is None:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
    return size
