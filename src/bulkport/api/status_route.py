"""The lean route of ``GET /v1/imports/{job_id}``, the read consoles and scripts poll.

FastAPI's route for it solves the handler's dependencies, validates its
parameters and runs it through FastAPI's own request wrapper on every call,
and a plain ``def`` handler is handed to anyio's threadpool: together most of
the API's CPU per status read, once the read itself was one query
(bench/README.md, "Status reads"). This plain Starlette route answers the
requests instead; it sits first in the router, so it matches before the
FastAPI route, which stays for the OpenAPI document (this one is left out of
it). Everything outside the router applies to both alike: the middlewares
(request id, metrics and access log, rate limit, API key, body limit) and
the exception handlers, so a 404, a 503 or a 500 has the one error shape.

Nothing is implemented twice: the job id check is :func:`valid_job_id` and
the answer is :func:`bulkport.api.imports.import_status_response`, as in the
FastAPI handler. ``tests/ops/test_status_route.py`` compares the answers of
both routes.
"""

from __future__ import annotations

import asyncio
import contextvars

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from bulkport.api.imports import import_status_response
from bulkport.api.params import valid_job_id
from bulkport.api.state import AppState

PATH = "/v1/imports/{job_id}"


async def import_status(request: Request) -> Response:
    job_id = valid_job_id(request.path_params["job_id"])
    state: AppState = request.app.state.bulkport
    # The query is blocking psycopg, so it runs in a thread; on the event loop it
    # would stall every other request for a round trip to PostgreSQL. The status
    # reads' own executor costs the loop a third of what anyio's threadpool does
    # (no cancel scope, capacity limiter or token per call), and bounds their
    # threads: 50 clients on anyio's 40 threads spent CPU taking turns on the GIL.
    # The context is copied, as anyio does, so log lines keep the request id.
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.status_threads, context.run,
                                      import_status_response, state, job_id)


class LeanRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's routes do:
    the metrics label it by its template without matching the routes again
    (bulkport.api.observe.route_template)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def install(app: FastAPI) -> None:
    """Put the lean route in front of every other route of ``app``."""
    route = LeanRoute(PATH, import_status, methods=["GET"], include_in_schema=False)
    # Starlette adds HEAD to a GET route; FastAPI's does not (HEAD is a 405 there):
    # keep the answers of the FastAPI route.
    route.methods = {"GET"}
    app.router.routes.insert(0, route)
