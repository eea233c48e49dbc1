"""The JSON response class of the API (orjson: fast, and native datetimes/enums)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette import responses


class JSONResponse(responses.JSONResponse):
    # A subclass of Starlette's JSONResponse, not of Response: FastAPI documents the
    # response_model of a route only for JSONResponse classes. With a plain Response
    # every 200 of the OpenAPI document said "a string".
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str)
