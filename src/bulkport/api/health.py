"""``/health``: the database answers and the data directory has room.

200 ``{"status": "healthy", "checks": {"database": "ok", "disk_space": "ok"}}``;
503 with ``"status": "unhealthy"``, the failing checks named in ``failing`` and
a reason in place of ``ok``. The disk threshold is ``BULKPORT_MIN_FREE_DISK_BYTES``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends

from bulkport.api.responses import JSONResponse
from bulkport.api.state import AppState, get_state
from bulkport.sql import QUERIES

router = APIRouter(tags=["operations"])

#: How long the database check waits for a pooled connection (seconds).
DB_CHECK_TIMEOUT_SECONDS = 2.0


def check_database(state: AppState) -> str:
    try:
        with state.pool.connection(timeout=DB_CHECK_TIMEOUT_SECONDS) as conn:
            conn.execute(QUERIES["health_check"])
    except (psycopg.Error, Exception) as exc:
        return f"failing: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


def check_disk(path: Path, min_free_bytes: int) -> str:
    # The directory may not exist yet: measure the filesystem it will be created on.
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return f"failing: {exc}"
    if free < min_free_bytes:
        return f"failing: {free} bytes free, fewer than {min_free_bytes}"
    return "ok"


@router.get("/health", summary="Liveness and readiness")
def health(state: Annotated[AppState, Depends(get_state)]) -> JSONResponse:
    checks = {
        "database": check_database(state),
        "disk_space": check_disk(state.settings.data_dir.absolute(),
                                 state.settings.min_free_disk_bytes),
    }
    failing = [name for name, result in checks.items() if result != "ok"]
    body: dict[str, object] = {"status": "unhealthy" if failing else "healthy", "checks": checks}
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)
