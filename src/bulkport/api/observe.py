"""Observes every HTTP request: Prometheus metrics and one access-log line.

The route label is the route *template* (``/v1/imports/{job_id}``), never the
raw path, so the number of series stays bounded; requests that match no route
are labelled ``unmatched``. Requests refused before routing (401, 403, 429,
413) are matched against the routes here so they keep their template.

While a request runs, its ``request_id`` is bound to every log line (see
:func:`bulkport.logs.log_context`), including lines of handlers run in threads.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkport import metrics
from bulkport.logs import log_context

log = logging.getLogger("bulkport.http")

#: Paths polled by machines (probes, scrapers): logged at DEBUG to keep logs readable.
QUIET_PATHS = frozenset({"/health", "/metrics"})
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that handled (or would handle) the request."""
    route = scope.get("route")
    if route is None:
        app: Any = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    path = getattr(route, "path", None)
    if path is None:
        return UNMATCHED
    return str(path) or "/"


class ObserveMiddleware:
    """Times each request, counts it by method/route/status and logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        state = scope.get("state") or {}
        with log_context(request_id=state.get("request_id")):
            try:
                await self.app(scope, receive, send_observed)
            finally:
                self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method, path = scope["method"], scope["path"]
        route = route_template(scope)
        metrics.observe_request(method, route, status, seconds)
        if path in QUIET_PATHS and status < 500:
            level = logging.DEBUG
        else:
            level = logging.WARNING if status >= 500 else logging.INFO
        client = scope.get("client")
        fields = {"event": "http_request", "method": method, "route": route, "path": path,
                  "status": status, "duration_ms": round(seconds * 1000, 1),
                  "client": client[0] if client else None}
        key = (scope.get("state") or {}).get("api_key_id")
        if key:
            fields["api_key_id"] = key
        log.log(level, "%s %s %d", method, path, status, extra=fields)
