"""JSON request bodies: the media type checked before a byte is read, the size capped.

A body is read only when its ``Content-Type`` is exactly ``application/json``
(any case, parameters such as ``charset`` allowed): ``application/jsonx`` or
``text/plain`` is a 415 answered without reading the body, so a client cannot
make the API hold a large body of the wrong type. A JSON body is read chunk by
chunk and refused (413) as soon as it passes :data:`MAX_JSON_BODY_BYTES`, so
memory stays bounded whatever the client sends (:mod:`bulkport.api.bodylimit`
holds the same limit before routing; this one does not depend on it).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from bulkport.api.bodylimit import MAX_PARSED_BODY_BYTES
from bulkport.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

#: Largest JSON request body (bytes): every valid request is a few hundred bytes.
MAX_JSON_BODY_BYTES = MAX_PARSED_BODY_BYTES
JSON = "application/json"

Model = TypeVar("Model", bound=BaseModel)


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without its parameters ('' when absent)."""
    ctype, _ = parse_options_header(request.headers.get("content-type", ""))
    return ctype.decode("latin-1").strip().lower()


def require_json(request: Request, hint: str) -> None:
    """415 unless the body is ``application/json``; nothing of the body is read."""
    if media_type(request) != JSON:
        given = request.headers.get("content-type") or "none"
        raise UnsupportedMediaType(
            f"send the body as Content-Type: application/json (got {given[:100]}); {hint}",
            allowed=[JSON])


async def read_json(request: Request, model: type[Model], example: str) -> Model:
    """Read and validate a JSON body of at most :data:`MAX_JSON_BODY_BYTES`."""
    require_json(request, f"for example {example}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY_BYTES:
            raise PayloadTooLarge(
                f"the JSON body is larger than {MAX_JSON_BODY_BYTES} bytes; a valid request "
                "is a few hundred bytes (send files as multipart/form-data)",
                limit_bytes=MAX_JSON_BODY_BYTES)
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise BadRequest(f"invalid JSON body: {where + ': ' if where else ''}{first['msg']}; "
                         f"send for example {example}") from None
