"""The OpenAPI record schemas come from the resource declarations, and are used.

Every declared field of every resource is in its record schema with the JSON
type of its kind, the fields an import requires are required, and the
operations that carry records (the import upload, the streaming export, the
export download) reference the record schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bulkport.api.app import create_app
from bulkport.config import Settings
from bulkport.pipeline.export_spec import MEDIA_TYPES
from bulkport.resources import RESOURCES, Kind, Resource

#: The JSON type each field kind has in a record (stated here, not read from the code).
JSON_TYPES = {Kind.ID: "string", Kind.TEXT: "string", Kind.EMAIL: "string",
              Kind.ENUM: "string", Kind.REF: "string", Kind.BOOL: "boolean",
              Kind.TIMESTAMP: "string", Kind.TAGS: "array"}
#: The component name of each resource's record schema: ``users`` -> ``User``.
NAMES = {name: name.capitalize().removesuffix("s") for name in RESOURCES}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _record_refs(node: Any) -> set[str]:
    return {r.rsplit("/", 1)[-1] for r in _refs(node)} & set(NAMES.values())


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop:
        (inner,) = [p for p in prop["anyOf"] if p != {"type": "null"}]
        return inner
    return prop


def test_every_resource_has_a_named_record_schema(spec: dict[str, Any]) -> None:
    assert {"User", "Article", "Comment"} <= set(NAMES.values())
    schemas = spec["components"]["schemas"]
    for name in NAMES.values():
        assert schemas[name]["type"] == "object"


@pytest.mark.parametrize("resource", RESOURCES.values(), ids=list(RESOURCES))
def test_every_declared_field_is_in_the_record_schema_with_its_type(
        spec: dict[str, Any], resource: Resource) -> None:
    schema = spec["components"]["schemas"][NAMES[resource.name]]
    props = schema["properties"]
    assert list(props) == resource.column_names
    for f in resource.fields:
        prop = props[f.name]
        typed = _non_null(prop)
        assert typed["type"] == JSON_TYPES[f.kind], f.name
        # an optional field may be null (empty); a required one may not
        assert ("anyOf" in prop) is (not f.required), f.name
        if f.kind is Kind.TIMESTAMP:
            assert typed["format"] == "date-time"
        if f.kind is Kind.TAGS:
            assert typed["items"] == {"type": "string"}
        if f.choices is not None:
            assert typed["enum"] == list(f.choices())
        if f.pattern is not None:
            assert f.pattern in typed["pattern"]
        if f.references is not None:
            assert f.references in prop["description"]
    assert schema["required"] == [f.name for f in resource.fields if f.required]


def test_the_roles_in_the_user_schema_are_the_configured_ones(spec: dict[str, Any]) -> None:
    role = spec["components"]["schemas"]["User"]["properties"]["role"]
    assert role["enum"] == Settings().allowed_roles


@pytest.mark.parametrize("path", ["/v1/imports", "/v1/imports/preview"])
def test_the_upload_references_every_record_schema(spec: dict[str, Any], path: str) -> None:
    body = spec["paths"][path]["post"]["requestBody"]["content"]
    file = body["multipart/form-data"]["schema"]["properties"]["file"]
    assert file["format"] == "binary"
    assert _record_refs(file["contentSchema"]) == set(NAMES.values())


@pytest.mark.parametrize("path", ["/v1/exports", "/v1/exports/{job_id}/download"])
def test_the_exported_content_references_every_record_schema(spec: dict[str, Any],
                                                               path: str) -> None:
    content = spec["paths"][path]["get"]["responses"]["200"]["content"]
    for media_type in MEDIA_TYPES.values():
        assert _record_refs(content[media_type]["schema"]) == set(NAMES.values()), media_type
    # the JSON export is an array of records (the listing of jobs is the other shape)
    json_schema = content["application/json"]["schema"]
    arrays = [s for s in json_schema.get("anyOf", [json_schema]) if s.get("type") == "array"]
    assert len(arrays) == 1 and _record_refs(arrays[0]["items"]) == set(NAMES.values())


def test_every_reference_of_the_document_resolves(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    refs = {r for r in _refs(spec["paths"]) if r.startswith("#/components/schemas/")}
    assert {f"#/components/schemas/{n}" for n in NAMES.values()} <= refs
    assert sorted(r for r in refs if r.rsplit("/", 1)[-1] not in schemas) == []
