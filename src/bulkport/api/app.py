"""The FastAPI application: wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from bulkport import __version__, db, interpreter
from bulkport.api import exports, health, imports, metrics, preview, status_route
from bulkport.api.bodylimit import BodyLimitMiddleware
from bulkport.api.errors import RequestIdMiddleware, install_error_handlers
from bulkport.api.observe import ObserveMiddleware
from bulkport.api.ratelimit import RateLimitMiddleware, rate_limit_buckets
from bulkport.api.record_schemas import document_records
from bulkport.api.responses import JSONResponse
from bulkport.api.security import ApiKeyMiddleware, document_security
from bulkport.api.state import AppState
from bulkport.config import Settings, get_settings
from bulkport.console import router as console
from bulkport.storage import upload_storage

DESCRIPTION = """Bulk import and export of users, articles and comments.

Imports run asynchronously: `POST /v1/imports` returns a job; poll
`GET /v1/imports/{id}` and read every rejected record with its reasons at
`GET /v1/imports/{id}/errors`."""


def create_app(settings: Settings | None = None, url: str | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db_url = url or db.database_url(settings)
        db.migrate(db_url)
        pool = db.open_pool(db_url, settings)
        app.state.bulkport = AppState(settings=settings, url=db_url, pool=pool,
                                      uploads=upload_storage(settings))
        try:
            yield
        finally:
            app.state.bulkport.status_threads.shutdown()
            pool.close()

    # Swagger UI is served by the console from vendored files (no CDN); ReDoc is not offered.
    app = BulkportApp(title="bulkport", version=__version__, description=DESCRIPTION,
                      lifespan=lifespan, default_response_class=JSONResponse,
                      docs_url=None, redoc_url=None, middleware=middlewares(settings))
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    document_security(app)
    app.include_router(preview.router)
    app.include_router(imports.router)
    app.include_router(exports.router)
    document_records(app)
    console.install(app)
    return app


def middlewares(settings: Settings) -> list[Middleware]:
    """bulkport's middlewares, outermost first: request id → observe → rate limit →
    API key → body limit. Both chains of the app are built from this one list
    (:class:`BulkportApp`); the rate limit's buckets are one object in both."""
    return [Middleware(RequestIdMiddleware),
            Middleware(ObserveMiddleware),
            Middleware(RateLimitMiddleware, settings=settings,
                       buckets=rate_limit_buckets(settings)),
            Middleware(ApiKeyMiddleware, settings=settings),
            Middleware(BodyLimitMiddleware, max_upload_bytes=settings.max_upload_bytes)]


class BulkportApp(FastAPI):
    """FastAPI, with the status reads answered in front of its own stack
    (:mod:`bulkport.api.status_route` says why) through the same middlewares."""

    def build_middleware_stack(self) -> ASGIApp:
        return status_route.front(super().build_middleware_stack(), self._around)

    def _around(self, endpoint: ASGIApp) -> ASGIApp:
        """``endpoint`` inside the app's middlewares (the outermost first in the list)."""
        for cls, args, kwargs in reversed(self.user_middleware):
            endpoint = cls(endpoint, *args, **kwargs)
        return endpoint


def serve_app() -> FastAPI:
    """The app of one API process of ``bulkport serve`` when it runs several
    (``BULKPORT_API_PROCESSES``): uvicorn calls this in each process it starts.

    A started process inherits the environment but none of the set-up ``serve``
    did in its own process, so it is done again here: logging, and the GIL switch
    interval of the export readers (bulkport.cli.cmd_serve says why).
    """
    from bulkport.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    interpreter.set_switch_interval()
    app = create_app(settings)
    interpreter.freeze_startup_objects()
    return app
