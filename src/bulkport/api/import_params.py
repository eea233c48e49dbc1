"""The fields of an import request (multipart form or JSON body), checked once for
``POST /v1/imports`` and ``POST /v1/imports/preview``; and the checks of an upload's
first block (format, header) made before a job is created."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from bulkport.api.state import AppState
from bulkport.errors import BadRequest, UnreadableFile
from bulkport.pipeline.csvreader import parse_delimiter
from bulkport.pipeline.encodings import head_as_utf8, parse_encoding
from bulkport.pipeline.formats import (
    HEADER_BLOCK_BYTES,
    delimiter_from_name,
    format_from_content,
    format_from_name,
    open_decompressed,
    parse_import_format,
    sniff,
)
from bulkport.pipeline.headers import check_head, parse_column_map
from bulkport.pipeline.types import parse_mode
from bulkport.resources import RESOURCES, get_resource

WAIT_FOR_PARENTS = ("Start only once the earlier-submitted imports of the resources this one "
                    "references have ended (load order users, articles, comments); false "
                    "starts at once")


COLUMN_MAP = ("Source column (CSV header or JSON key) -> field name; overrides the "
              "case-insensitive matching of names (docs/imports.md)")


DELIMITER = ("CSV delimiter: , ; | or tab (also: comma, semicolon, pipe, tab); detected "
             "from the header line when absent")


ENCODING = ("Text encoding of the file: utf-8 (default), utf-16, utf-16le, utf-16be, utf-32, "
            "latin-1, cp1252, iso-8859-15; a byte-order mark wins over it")


class ImportByUrl(BaseModel):
    resource: str
    file_url: str
    format: str | None = None
    mode: str | None = None
    dry_run: bool = False
    wait_for_parents: bool = Field(True, description=WAIT_FOR_PARENTS)
    column_map: dict[str, str] | None = Field(None, description=COLUMN_MAP,
                                              examples=[{"E-mail": "email"}])
    delimiter: str | None = Field(None, description=DELIMITER)
    encoding: str | None = Field(None, description=ENCODING)


UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file", "resource"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "resource": {"type": "string", "enum": list(RESOURCES)},
                    "format": {"type": "string", "enum": ["csv", "tsv", "ndjson", "json"]},
                    "delimiter": {"type": "string", "description": DELIMITER},
                    "encoding": {"type": "string", "description": ENCODING},
                    "mode": {"type": "string", "enum": ["insert", "upsert"]},
                    "dry_run": {"type": "boolean"},
                    "wait_for_parents": {"type": "boolean", "default": True,
                                         "description": WAIT_FOR_PARENTS},
                    "column_map": {"type": "string", "description": COLUMN_MAP
                                   + "; here as JSON text, e.g. {\"E-mail\": \"email\"}"},
                },
            }},
            "application/json": {"schema": ImportByUrl.model_json_schema()},
        },
    },
}



def request_identity(request_fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of the idempotency fingerprint: wait_for_parents only when false, and
    the reading options only when given, so that keys used before the options existed
    still match their default requests."""
    return {k: v for k, v in request_fields.items()
            if not (k == "wait_for_parents" and v) and not (k in _OPTIONS and v is None)}


#: Reading options of an import: part of the fingerprint only when given.
_OPTIONS = frozenset({"column_map", "delimiter", "encoding"})


def _flag(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", ""):
            raise BadRequest(f"{name} must be true or false")
        return value.lower() in ("true", "1") if value else default
    return bool(value)


def import_params(params: dict[str, Any]) -> dict[str, Any]:
    resource = params.get("resource")
    if not resource:
        raise BadRequest(f"'resource' is required; use one of: {', '.join(RESOURCES)}",
                         allowed=list(RESOURCES))
    fmt, tab = parse_import_format(params.get("format"))
    delimiter = parse_delimiter(params.get("delimiter"))
    if tab and delimiter not in (None, tab):
        raise BadRequest("format tsv means a tab delimiter; send format csv with that delimiter")
    res = get_resource(str(resource))
    return {"resource": res.name,
            "format": fmt.value if fmt else None,
            "mode": parse_mode(params.get("mode")).value,
            "dry_run": _flag(params, "dry_run", False),
            "wait_for_parents": _flag(params, "wait_for_parents", True),
            "column_map": parse_column_map(params.get("column_map"), res),
            "delimiter": delimiter or tab,
            "encoding": parse_encoding(params.get("encoding"))}


def check_header(state: AppState, key: str, request_fields: dict[str, Any],
                  file_name: str | None) -> None:
    """422 when the CSV header (in the file's first block) lacks a required field."""
    if request_fields["format"] != "csv":
        return
    try:
        with state.uploads.open_read(key) as raw:
            head = sniff(open_decompressed(raw, max_bytes=state.settings.max_decompressed_bytes),
                         HEADER_BLOCK_BYTES)
    except (UnreadableFile, OSError, EOFError):
        return  # left to the worker, which fails the job with the reason
    check_head(head_as_utf8(head, request_fields["encoding"]),
               get_resource(request_fields["resource"]), request_fields["column_map"],
               request_fields["delimiter"] or delimiter_from_name(file_name))


def detect_format(state: AppState, key: str, file_name: str | None) -> str | None:
    """The format the name or the first bytes tell (as the worker will read it), else None.

    A file that cannot be read (a damaged gzip) is left to the worker, which fails
    the job with a readable reason.
    """
    named = format_from_name(file_name)
    if named is not None:
        return named.value
    try:
        with state.uploads.open_read(key) as raw:
            head = sniff(open_decompressed(raw, max_bytes=state.settings.max_decompressed_bytes))
    except (UnreadableFile, OSError, EOFError):
        return None
    return format_from_content(head).value if head.strip() else None


