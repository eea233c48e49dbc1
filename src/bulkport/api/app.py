"""The FastAPI application: wiring only."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bulkport import __version__, db
from bulkport.api import exports, health, imports, metrics, preview, status_route
from bulkport.api.bodylimit import BodyLimitMiddleware
from bulkport.api.errors import RequestIdMiddleware, install_error_handlers
from bulkport.api.observe import ObserveMiddleware
from bulkport.api.ratelimit import RateLimitMiddleware
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
    app = FastAPI(title="bulkport", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, default_response_class=JSONResponse,
                  docs_url=None, redoc_url=None)
    # Outermost last: request id → observe → rate limit → API key → body limit → routes.
    app.add_middleware(BodyLimitMiddleware, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, settings=settings)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(ObserveMiddleware)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    document_security(app)
    app.include_router(preview.router)
    app.include_router(imports.router)
    status_route.install(app)  # first in the router: it answers before the route above
    app.include_router(exports.router)
    document_records(app)
    console.install(app)
    return app


def serve_app() -> FastAPI:
    """The app of one API process of ``bulkport serve`` when it runs several
    (``BULKPORT_API_PROCESSES``): uvicorn calls this in each process it starts.

    A started process inherits the environment but none of the set-up ``serve``
    did in its own process, so it is done again here: logging, and the GIL switch
    interval of the export readers (bulkport.cli.cmd_serve says why).
    """
    from bulkport.jobs.worker import GIL_SWITCH_SECONDS
    from bulkport.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app = create_app(settings)
    freeze_startup_objects()
    return app


def freeze_startup_objects() -> None:
    """Keep what a server process has built so far out of the garbage collector's sight.

    The modules, the app, its routes and models live as long as the process; a full
    collection walked them all (~80,000 objects, ~45 ms on a busy 2-core machine), a
    pause every request in flight waited through (bench/README.md, "Status reads").
    Collected first, so that no garbage of the start-up is kept for good. Only the
    server processes call this, once: an app built in-process (tests) is left alone.
    """
    gc.collect()
    gc.freeze()
