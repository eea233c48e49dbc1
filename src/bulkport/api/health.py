"""``/health``: the database answers and the data directory has room."""

from __future__ import annotations

import shutil
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends

from bulkport.api.responses import JSONResponse
from bulkport.api.state import AppState, get_state
from bulkport.sql import QUERIES

router = APIRouter(tags=["operations"])

#: Free space below which the disk check fails (bytes).
MIN_FREE_DISK_BYTES = 512 * 1024 * 1024


@router.get("/health", summary="Liveness and readiness")
def health(state: Annotated[AppState, Depends(get_state)]) -> JSONResponse:
    checks = {"database": "ok", "disk_space": "ok"}
    try:
        with state.pool.connection(timeout=2.0) as conn:
            conn.execute(QUERIES["health_check"])
    except (psycopg.Error, Exception) as exc:
        checks["database"] = f"failing: {type(exc).__name__}"
    free = shutil.disk_usage(state.settings.data_dir).free
    if free < MIN_FREE_DISK_BYTES:
        checks["disk_space"] = f"failing: {free} bytes free"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "healthy" if healthy else "unhealthy", "checks": checks},
                          status_code=200 if healthy else 503)
