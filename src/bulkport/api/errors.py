"""One error shape for every response, and the ``X-Request-ID`` on each of them."""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
import uuid
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkport.api.responses import JSONResponse
from bulkport.errors import BulkportError

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None)

# Generated request ids are uuid4s drawn from a generator seeded from os.urandom, not
# uuid.uuid4(): its os.urandom per request is a system call that releases the GIL,
# and the event loop then waited for a status-read thread to hand it back
# (bench/README.md, "Status reads"). An id only correlates log lines; it is no secret.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not repeat ids


def new_request_id() -> str:
    return uuid.UUID(int=_ids.getrandbits(128), version=4).hex


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details or {},
            "request_id": request_id_var.get()}


def error_response(status: int, code: str, message: str,
                   details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status,
                          headers=headers)


#: Status recorded for a request whose client disconnected before the answer (nginx's).
CLIENT_CLOSED_REQUEST = 499

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 401: "unauthorized", 403: "forbidden",
               429: "rate_limited"}


def bulkport_error_response(exc: BulkportError) -> JSONResponse:
    """The answer to a :class:`BulkportError` raised while handling a request."""
    # A 413 leaves the rest of the body unread, so the connection cannot carry
    # another request: close it, as the body limit's own 413 does.
    headers = {"Connection": "close"} if exc.status_code == 413 else None
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers=headers)


def database_unavailable_response(method: str, path: str,
                                  exc: psycopg.OperationalError) -> JSONResponse:
    """The answer when PostgreSQL cannot be reached (a pool timeout is one of these too)."""
    # The database is down or restarting: 503 tells the client to retry, where a 500
    # would report a bug.
    log.warning("database unavailable on %s %s: %s", method, path, exc)
    return error_response(503, "database_unavailable",
                          "the database is unavailable right now; retry in a few seconds",
                          headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BulkportError)
    async def bulkport_error(request: Request, exc: BulkportError) -> JSONResponse:
        return bulkport_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"location": "", "message": "invalid request"}
        return error_response(
            400, "validation_error", f"{first['location']}: {first['message']}",
            {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail),
                              headers=dict(exc.headers or {}))

    @app.exception_handler(ClientDisconnect)
    async def client_closed(request: Request, exc: ClientDisconnect) -> Response:
        # The client went away mid-request (an aborted upload): nothing failed here.
        # 499 (nginx's "client closed request") keeps it out of the 5xx counts; the
        # response is never read.
        log.info("client closed the connection during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: psycopg.OperationalError
                                   ) -> JSONResponse:
        return database_unavailable_response(request.method, request.url.path, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error",
                              "an unexpected error occurred; report the request_id")


class RequestIdMiddleware:
    """Echo a well-formed ``X-Request-ID`` or generate one; expose it to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = given if _SAFE_ID.fullmatch(given) else new_request_id()
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette answers unhandled errors outside every middleware, so its 500 would
            # carry neither the header nor the request_id: answer here instead.
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(500, "internal_error",
                                      "an unexpected error occurred; report the request_id")
            await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
