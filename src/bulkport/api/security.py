"""API keys: ``Authorization: Bearer <key>`` on every ``/v1`` route when keys are configured.

Keys come from ``BULKPORT_API_KEYS``. With none configured the API is open (the
embedded, single-user default). With keys:

* no or malformed ``Authorization`` header → **401** ``unauthorized``;
* a key that is not configured → **403** ``forbidden``;
* ``/health`` and ``/metrics`` stay open unless ``BULKPORT_HEALTH_REQUIRE_KEY`` /
  ``BULKPORT_METRICS_REQUIRE_KEY`` are set.

A key is known inside the service only by its *key id*: the first 16 hex digits
of its SHA-256. The id is what logs show (``api_key_id``), what the rate limiter
counts by, and the scope of idempotency keys (:func:`scoped_idempotency_key`),
so two clients can never see or collide with each other's idempotent requests.
Keys are not tenants: any valid key may read every job.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bulkport.api.errors import error_response
from bulkport.config import Settings

#: The realm announced in ``WWW-Authenticate``.
REALM = "bulkport"


def key_id(key: str) -> str:
    """The public identifier of an API key (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeys:
    """The configured keys, held as SHA-256 digests."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._ids = {hashlib.sha256(k.encode()).digest(): key_id(k) for k in keys if k}

    @property
    def enabled(self) -> bool:
        return bool(self._ids)

    def identify(self, token: str) -> str | None:
        """The key id of ``token`` when it is a configured key, else ``None``."""
        digest = hashlib.sha256(token.encode()).digest()
        for known, kid in self._ids.items():  # constant time in the key, not a dict lookup
            if hmac.compare_digest(known, digest):
                return kid
        return None


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def is_protected(path: str, settings: Settings) -> bool:
    if path == "/v1" or path.startswith("/v1/"):
        return True
    if path == "/metrics":
        return settings.metrics_require_key
    if path == "/health":
        return settings.health_require_key
    return False


class ApiKeyMiddleware:
    """Refuses requests to protected paths without a valid key; marks the key id."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.keys = ApiKeys(settings.api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.keys.enabled
                or not is_protected(scope["path"], self.settings)):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            response = error_response(
                401, "unauthorized",
                "this endpoint needs an API key: send the header 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
            await response(scope, receive, send)
            return
        kid = self.keys.identify(token)
        if kid is None:
            response = error_response(
                403, "forbidden", "the API key is not valid; check the key or ask for a new one",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key_id"] = kid
        await self.app(scope, receive, send)


def scoped_idempotency_key(request: Request, key: str | None) -> str | None:
    """``key`` prefixed with the caller's key id, so each API key has its own keys."""
    kid = request.scope.get("state", {}).get("api_key_id")
    if key is None or kid is None:
        return key
    return f"{kid}:{key}"


def document_security(app: FastAPI) -> None:
    """Declare bearer auth in the OpenAPI document (Swagger UI's "Authorize" button)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema and "securitySchemes" in app.openapi_schema.get("components", {}):
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "One of BULKPORT_API_KEYS (when keys are configured)"}}
        error = {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ErrorResponse"}}}}
        refusals = {"401": {"description": "No API key (when keys are configured)", **error},
                    "403": {"description": "The API key is not valid", **error},
                    "429": {"description": "Rate limited; see Retry-After", **error}}
        has_error_schema = "ErrorResponse" in schema["components"].get("schemas", {})
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/v1"):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
                    if has_error_schema:
                        for status, doc in refusals.items():
                            operation.setdefault("responses", {}).setdefault(status, doc)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
