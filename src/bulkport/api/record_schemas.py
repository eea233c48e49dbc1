"""The record schemas of the OpenAPI document, derived from the resource declarations.

One schema per resource (``User``, ``Article``, ``Comment``: components of the
document), built from its declared fields: kind → JSON type, the id alphabet,
patterns, choices and which fields an import requires. The operations that
carry records reference them:

* the uploaded ``file`` of ``POST /v1/imports`` and ``POST /v1/imports/preview``
  (:data:`UPLOAD_FILE`): its records, whatever the format;
* the body of a streaming export and of an export job's download
  (:func:`export_content`): a JSON array of records, or NDJSON / CSV text whose
  records have that shape.

NDJSON and CSV bodies are text: their schema is a string whose ``contentSchema``
(JSON Schema 2020-12, as OpenAPI 3.1 uses it) is the array of records it holds.
A CSV cell holds the text form of a value (``true``, a JSON array of tags).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from bulkport.pipeline.export_spec import MEDIA_TYPES
from bulkport.resources import RESOURCES, Kind, Resource
from bulkport.resources.base import EMAIL_PATTERN, ID_PATTERN

_COMPONENTS = "#/components/schemas/"
_ID = {"type": "string", "pattern": f"^(?:{ID_PATTERN.pattern})$"}
_KIND_SCHEMAS: dict[Kind, dict[str, Any]] = {
    Kind.ID: _ID,
    Kind.REF: _ID,
    Kind.TEXT: {"type": "string"},
    Kind.EMAIL: {"type": "string", "format": "email",
                 "pattern": f"^(?:{EMAIL_PATTERN.pattern})$"},
    Kind.ENUM: {"type": "string"},
    Kind.BOOL: {"type": "boolean"},
    Kind.TIMESTAMP: {"type": "string", "format": "date-time"},
    Kind.TAGS: {"type": "array", "items": {"type": "string"}},
}


def record_schema_name(resource: Resource) -> str:
    """``users`` → ``User``: the component name of a resource's record schema."""
    return resource.name.capitalize().removesuffix("s")


def record_ref(resource: Resource) -> dict[str, str]:
    return {"$ref": _COMPONENTS + record_schema_name(resource)}


def record_schema(resource: Resource) -> dict[str, Any]:
    """The JSON schema of one record of ``resource``, from its declared fields.

    Choices are read when the document is built (the roles come from the settings).
    """
    properties: dict[str, Any] = {}
    for f in resource.fields:
        prop: dict[str, Any] = dict(_KIND_SCHEMAS[f.kind])
        if f.pattern:
            prop["pattern"] = f"^(?:{f.pattern})$"
        if f.choices is not None:
            prop["enum"] = list(f.choices())
        notes = [f.description] if f.description else []
        if f.references:
            notes.append(f"The id of a record of {f.references}")
        if f.kind is Kind.ID and not f.required:
            notes.append("Generated when absent")
        if not f.required:  # an empty value: NULL, or the field's insert default
            prop = {"anyOf": [prop, {"type": "null"}], "default": None}
        if notes:
            prop["description"] = "; ".join(notes)
        properties[f.name] = prop
    return {"title": record_schema_name(resource), "type": "object",
            "description": resource.description, "properties": properties,
            "required": [f.name for f in resource.fields if f.required]}


def _any_record() -> dict[str, Any]:
    return {"anyOf": [record_ref(r) for r in RESOURCES.values()]}


def _which() -> str:
    return ", ".join(f"{name}: {record_schema_name(r)}" for name, r in RESOURCES.items())


def _records(projected: bool = False) -> dict[str, Any]:
    note = " (with fields=…, only the fields asked for)" if projected else ""
    return {"type": "array", "items": _any_record(),
            "description": f"The records, each shaped as its resource's record schema "
                           f"({_which()}){note}"}


#: The ``file`` part of an import upload.
UPLOAD_FILE: dict[str, Any] = {
    "type": "string", "format": "binary",
    "description": "The records: CSV or TSV with a header row, NDJSON, or a JSON array "
                   "(gzip allowed); each record has the fields of the resource's record "
                   f"schema ({_which()})",
    "contentSchema": _records(),
}


def export_content(json_page: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``content`` of a 200 that carries exported records, by format.

    ``json_page`` is the other document ``application/json`` may be (a page of
    export jobs, on ``GET /v1/exports`` without a resource).
    """
    content: dict[str, Any] = {}
    for fmt, media_type in MEDIA_TYPES.items():
        name = fmt.value
        if name == "json":
            records = _records(projected=True)
            schema = records if json_page is None else {"anyOf": [records, json_page]}
        else:
            layout = ("one JSON record per line" if name == "ndjson" else
                      "a header row of the exported field names, then one row per record")
            schema = {"type": "string", "description": f"{name.upper()}: {layout}",
                      "contentSchema": _records(projected=True)}
        content[media_type] = {"schema": schema}
    return content


def document_records(app: FastAPI) -> None:
    """Add the record schemas to the components of the app's OpenAPI document."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for resource in RESOURCES.values():
            components.setdefault(record_schema_name(resource), record_schema(resource))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
