"""Request body limits, enforced while the body streams in (413 ``payload_too_large``).

A body announced larger than the limit (``Content-Length``) is refused before a
byte of it is read. A body without a length (chunked) is counted as it arrives
and refused as soon as it passes the limit, so an upload is never stored whole
before it is found too large. Files (multipart and raw bodies) may be up to
``BULKPORT_MAX_UPLOAD_BYTES`` plus room for the multipart envelope; bodies that
are parsed in memory (JSON, url-encoded forms) are limited to
:data:`MAX_PARSED_BODY_BYTES`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkport.api.errors import error_response

#: Room for multipart boundaries and the small form fields next to the file (bytes).
MULTIPART_OVERHEAD_BYTES = 64 * 1024
#: JSON / url-encoded bodies are read into memory: 1 MiB is far above any valid request.
MAX_PARSED_BODY_BYTES = 1024 * 1024
_PARSED_TYPES = ("application/json", "application/x-www-form-urlencoded")


class BodyLimitMiddleware:
    """Refuses request bodies over the limit of their content type."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    def limit_and_hint(self, scope: Scope) -> tuple[int, str]:
        ctype = _header(scope, b"content-type").split(";")[0].strip().lower()
        if ctype in _PARSED_TYPES:
            return MAX_PARSED_BODY_BYTES, (
                f"{ctype} request bodies are limited to {MAX_PARSED_BODY_BYTES} bytes; "
                "send files as multipart/form-data")
        return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES, (
            f"uploads are limited to {self.max_upload_bytes} bytes (BULKPORT_MAX_UPLOAD_BYTES); "
            "compress the file (.gz is accepted) or split it")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, hint = self.limit_and_hint(scope)
        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > limit:
            await self._refuse(scope, receive, send, limit, hint)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Close the connection: the rest of the body is not worth reading.
                    raise HTTPException(413, f"the request body is too large: {hint}",
                                        headers={"Connection": "close"})
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await self._refuse(scope, receive, send, limit, hint)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int,
                      hint: str) -> None:
        response = error_response(413, "payload_too_large",
                                  f"the request body is too large: {hint}",
                                  {"limit_bytes": limit},
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""
