"""The HTTP response of a streaming export, and what it needs around it.

:class:`CopyStreamResponse` sends a :class:`~bulkport.pipeline.export.bridge.CopyStream`
chunk by chunk (chunked transfer encoding) and watches for the client going
away: then, or when a client stops reading for ``SEND_STALL_SECONDS``, the
stream is closed, which cancels the query and returns its connection to the
pool. Sending waits on the socket (uvicorn's flow control), so a slow client
slows PostgreSQL down instead of filling memory.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
from psycopg_pool import ConnectionPool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bulkport import metrics
from bulkport.pipeline.export.bridge import CopyStream
from bulkport.storage import ExportStorage

log = logging.getLogger(__name__)

#: Longest a client may take to accept one chunk before the export is dropped (seconds).
SEND_STALL_SECONDS = 120.0
#: Longest a request waits for a free export connection before a 503 (seconds).
STREAM_WAIT_SECONDS = 5.0
#: Longest a split export waits for a helper connection before reading with fewer (seconds).
LANE_WAIT_SECONDS = 1.0


@dataclass
class ExportState:
    """What the export routes share: the streaming pool and the export storage."""

    streams: ConnectionPool[psycopg.Connection[Any]]
    #: Extra connections of streams split into lanes (None: one connection each).
    lanes: ConnectionPool[psycopg.Connection[Any]] | None
    #: Connections one stream may read with.
    lane_count: int
    storage: ExportStorage
    #: Lifetime of a presigned download URL (seconds), capped by the export's expiry.
    url_ttl_seconds: int


def helper_connections(state: ExportState
                       ) -> list[AbstractContextManager[psycopg.Connection[Any]]]:
    """The extra connections a stream may split its reading over (entered only if it does)."""
    if state.lanes is None:
        return []
    return [state.lanes.connection(timeout=LANE_WAIT_SECONDS)
            for _ in range(state.lane_count - 1)]


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``q=0`` refuses it)."""
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class CopyStreamResponse(Response):
    """A started :class:`CopyStream`, sent as a chunked response."""

    def __init__(self, stream: CopyStream, *, media_type: str,
                 headers: dict[str, str] | None = None) -> None:
        self.stream = stream
        self.body_sent = False
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self.stream.spec
        try:
            with metrics.export_stream(spec.resource.name, spec.format.value):
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
                async with anyio.create_task_group() as group:
                    group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
                    await self._send_body(send)
                    group.cancel_scope.cancel()
        finally:
            await self.stream.aclose()

    async def _send_body(self, send: Send) -> None:
        # Returning without the last chunk makes the server close the connection, so
        # the client sees an incomplete body, never a cut file that looks complete.
        try:
            async with aclosing(self.stream.chunks()) as chunks:
                async for chunk in chunks:
                    with anyio.fail_after(SEND_STALL_SECONDS):
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
        except TimeoutError:
            log.warning("export client read nothing for %.0f s; dropping the export",
                        SEND_STALL_SECONDS)
            return
        except (psycopg.Error, OSError) as exc:
            log.error("export of %s failed after its first byte: %s",
                      self.stream.spec.resource.name, exc)
            return
        self.body_sent = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.body_sent:  # (servers also say so once a response is complete)
                    log.info("export client disconnected; stopping the export")
                    scope.cancel()
                return
