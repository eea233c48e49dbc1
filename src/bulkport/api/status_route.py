"""The lean path of ``GET /v1/imports/{job_id}``, the read consoles and scripts poll.

FastAPI's route for it solves the handler's dependencies, validates its
parameters and runs it through FastAPI's own request wrapper on every call;
around the routes sit Starlette's and FastAPI's own layers (server errors,
exception telemetry, its body limit, exception handlers, an exit stack, the
router matching each route in turn). For a read that is one query, those were
most of the API's CPU (bench/README.md, "Status reads"). :class:`StatusFront`
answers these requests in front of all of that, through the same middlewares
of bulkport (request id, metrics and access log, rate limit, API key, body
limit: :func:`bulkport.api.app.middlewares` builds both chains from one list,
and the rate limiter's buckets are one object), with the same error shapes
(:mod:`bulkport.api.errors`). Every other request, including other methods on
this path, goes to FastAPI as before; FastAPI's route of this path stays, for
the OpenAPI document and as the reference the tests compare against.

Nothing is implemented twice: the job id check is :func:`valid_job_id` and the
answer is :func:`bulkport.api.imports.import_status_response`, as in the FastAPI
handler. ``tests/ops/test_status_route.py`` compares the answers of both paths.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from starlette.types import ASGIApp, Receive, Scope, Send

from bulkport.api.errors import bulkport_error_response, database_unavailable_response
from bulkport.api.imports import import_status_response
from bulkport.api.params import valid_job_id
from bulkport.api.state import AppState
from bulkport.errors import BulkportError

PATH = "/v1/imports/{job_id}"
#: The path as Starlette's router matches ``{job_id}`` (one segment). Matched here, not
#: with FastAPI's route object: FastAPI keeps an included router's routes inside a
#: wrapper of its own (``app.routes`` holds no route of this path to call).
_PATH = re.compile(r"/v1/imports/([^/]+)")


@dataclass(frozen=True, slots=True)
class _Route:
    """What the metrics read from ``scope["route"]``: the template (observe.route_template)."""

    path: str = PATH


_ROUTE = _Route()


async def import_status(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint: the answer of :func:`import_status_response`, or its error."""
    scope["route"] = _ROUTE
    try:
        job_id = valid_job_id(scope["path_params"]["job_id"])
        state: AppState = scope["app"].state.bulkport
        # The query is blocking psycopg, so it runs in a thread; on the event loop it
        # would stall every other request for a round trip to PostgreSQL. The status
        # reads' own executor costs the loop a third of what anyio's threadpool does
        # (no cancel scope, capacity limiter or token per call), and bounds their
        # threads: 50 clients on anyio's 40 threads spent CPU taking turns on the GIL.
        # The context is copied, as anyio does, so log lines keep the request id.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(state.status_threads, context.run,
                                              import_status_response, state, job_id)
    except BulkportError as exc:
        response = bulkport_error_response(exc)
    except psycopg.OperationalError as exc:
        response = database_unavailable_response(scope["method"], scope["path"], exc)
    # Anything else reaches RequestIdMiddleware, which answers the 500 as for any route.
    await response(scope, receive, send)


class StatusFront:
    """In front of the app's own stack: ``GET /v1/imports/{job_id}`` goes through
    ``lean`` (bulkport's middlewares around :func:`import_status`), the rest to ``app``."""

    def __init__(self, app: ASGIApp, lean: ASGIApp) -> None:
        self.app = app
        self.lean = lean

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]  # as Starlette's router matches it
            match = _PATH.fullmatch(path)
            if match:
                scope["path_params"] = {"job_id": match.group(1)}
                await self.lean(scope, receive, send)
                return
        await self.app(scope, receive, send)


def front(app_stack: ASGIApp, wrap: Callable[[ASGIApp], ASGIApp]) -> StatusFront:
    """:class:`StatusFront` over ``app_stack``; ``wrap`` puts the middlewares around the
    endpoint."""
    return StatusFront(app_stack, wrap(import_status))
