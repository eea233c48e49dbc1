"""The fields of an import request (multipart form or JSON body), checked once for
``POST /v1/imports`` and ``POST /v1/imports/preview``, and their OpenAPI description.

The checks of an upload's first block (format, header) are in
:mod:`bulkport.api.import_source`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from bulkport.api.record_schemas import UPLOAD_FILE
from bulkport.errors import BadRequest
from bulkport.pipeline.csvreader import parse_delimiter
from bulkport.pipeline.encodings import parse_encoding
from bulkport.pipeline.formats import parse_import_format
from bulkport.pipeline.headers import parse_column_map
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


class UploadForm(BaseModel):
    """The multipart form of an upload: the file and the fields of an import, as text.

    Documentation only: the form is read by :mod:`bulkport.api.upload` (which streams
    the file into storage) and checked by :func:`import_params`.
    """

    file: bytes
    resource: str = Field(json_schema_extra={"enum": list(RESOURCES)})
    format: Literal["csv", "tsv", "ndjson", "json"] | None = None
    delimiter: str | None = Field(None, description=DELIMITER)
    encoding: str | None = Field(None, description=ENCODING)
    mode: Literal["insert", "upsert"] | None = None
    dry_run: bool | None = None
    wait_for_parents: bool = Field(True, description=WAIT_FOR_PARENTS)
    column_map: str | None = Field(None, description=COLUMN_MAP + "; here as JSON text, "
                                                                  "e.g. {\"E-mail\": \"email\"}")


class _FormJsonSchema(GenerateJsonSchema):
    """A form field is text or absent, never null: no ``null`` branch, no ``null`` default;
    and no titles, the names say as much."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if schema.get("default") is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def form_schema(model: type[BaseModel], **parts: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema of a multipart form described by ``model``.

    ``parts`` replace the schema of named fields: the file part is described by
    the resource record schemas (api/record_schemas.py), which pydantic cannot know.
    """
    schema = model.model_json_schema(schema_generator=_FormJsonSchema)
    schema.pop("title", None)
    schema.pop("description", None)
    schema["properties"].update(parts)
    return schema


UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": form_schema(UploadForm, file=UPLOAD_FILE)},
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
