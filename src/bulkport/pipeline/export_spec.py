"""What an export asks for: resource, format, projection and filters, validated.

Allowed fields and filters derive from the resource declaration:

* every field can be projected (``fields=id,email``);
* a ``filterable`` timestamp field ``x_at`` gives ``x_at_from`` (>=),
  ``x_at_to`` (<=) and ``x_since`` (an alias of ``x_at_from``);
* any other ``filterable`` field gives equality ``name=value`` (repeat the
  parameter for "any of");
* a tags field gives ``tag=value`` (repeat it: the record has every tag).

Values are checked and typed here, so a bad request is a 400 that lists what
is allowed, never a database error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bulkport.errors import BadRequest
from bulkport.pipeline.formats import Format, parse_format
from bulkport.resources import RESOURCES, Kind, Resource, get_resource
from bulkport.resources.base import ID_PATTERN
from bulkport.sql.exporting import Condition

#: Most values one filter may list (bounds the statement size).
MAX_FILTER_VALUES = 1000
#: Longest filter value accepted (characters).
MAX_FILTER_VALUE_CHARS = 1000
#: Largest ``limit`` of a streaming export (PostgreSQL's bigint).
MAX_LIMIT = 2**63 - 1

MEDIA_TYPES = {Format.NDJSON: "application/x-ndjson", Format.CSV: "text/csv; charset=utf-8",
               Format.JSON: "application/json"}


@dataclass(frozen=True)
class FilterDef:
    """One query parameter an export of a resource accepts."""

    param: str
    field: str
    op: str  # "in", ">=", "<=", "contains"
    kind: Kind


def filter_defs(resource: Resource) -> dict[str, FilterDef]:
    defs: dict[str, FilterDef] = {}
    for f in resource.fields:
        if f.kind is Kind.TAGS:
            param = f.name.removesuffix("s")
            defs[param] = FilterDef(param, f.name, "contains", f.kind)
        elif not f.filterable:
            continue
        elif f.kind is Kind.TIMESTAMP:
            defs[f"{f.name}_from"] = FilterDef(f"{f.name}_from", f.name, ">=", f.kind)
            defs[f"{f.name}_to"] = FilterDef(f"{f.name}_to", f.name, "<=", f.kind)
            since = f"{f.name.removesuffix('_at')}_since"
            defs[since] = FilterDef(since, f.name, ">=", f.kind)
        else:
            defs[f.name] = FilterDef(f.name, f.name, "in", f.kind)
    return defs


FILTERS: dict[str, dict[str, FilterDef]] = {name: filter_defs(r) for name, r in RESOURCES.items()}


@dataclass(frozen=True)
class ExportSpec:
    """A validated export request."""

    resource: Resource
    format: Format
    fields: tuple[str, ...]
    #: Normalised filters, ``param -> values`` as given (stored with a job).
    filters: dict[str, list[str]]
    conditions: tuple[Condition, ...]
    #: At most this many rows (the first in id order); ``None``: every row.
    limit: int | None = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    @property
    def filename(self) -> str:
        return f"{self.resource.name}.{self.format.value}"

    def identity(self) -> dict[str, Any]:
        """What makes two export requests the same (idempotency fingerprint)."""
        return {"resource": self.resource.name, "format": self.format.value,
                "fields": list(self.fields), "filters": self.filters}


def parse_spec(resource: str | None, fmt: str | None, fields: str | Iterable[str] | None,
               filters: Mapping[str, Any], *, limit: str | None = None) -> ExportSpec:
    """Validate an export request; a problem is a :class:`BadRequest` naming what is allowed."""
    if not resource:
        raise BadRequest(f"'resource' is required; use one of: {', '.join(RESOURCES)}",
                         allowed=list(RESOURCES))
    res = get_resource(resource)
    return ExportSpec(res, parse_format(fmt) or Format.NDJSON, _fields(res, fields),
                      *_filters(res, filters), limit=_limit(limit))


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    value = raw.strip()
    if (not value.isascii() or not value.isdigit() or len(value) > 19
            or not 1 <= int(value) <= MAX_LIMIT):
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw[:50]!r}",
                         param="limit")
    return int(value)


def _fields(resource: Resource, fields: str | Iterable[str] | None) -> tuple[str, ...]:
    if fields is None:
        return tuple(resource.column_names)
    items = fields.split(",") if isinstance(fields, str) else list(fields)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise BadRequest("fields must be a list of field names")
        names.extend(n.strip() for n in item.split(",") if n.strip())
    unknown = [n for n in names if not resource.has_field(n)]
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))} for {resource.name}; "
            f"use any of: {', '.join(resource.column_names)}",
            unknown=unknown, allowed=resource.column_names)
    if not names:
        return tuple(resource.column_names)
    return tuple(dict.fromkeys(names))  # first occurrence wins, order kept


def _filters(resource: Resource, filters: Mapping[str, Any]
             ) -> tuple[dict[str, list[str]], tuple[Condition, ...]]:
    defs = FILTERS.get(resource.name) or filter_defs(resource)
    unknown = sorted(set(filters) - set(defs))
    if unknown:
        raise BadRequest(
            f"unknown filter(s) {', '.join(map(repr, unknown))} for {resource.name}; "
            f"use any of: {', '.join(defs)}", unknown=unknown, allowed=list(defs))
    normalised: dict[str, list[str]] = {}
    conditions: list[Condition] = []
    for param in sorted(filters):
        raw = filters[param]
        values = [raw] if isinstance(raw, str | bool) else list(raw)
        if not values:
            continue
        if len(values) > MAX_FILTER_VALUES:
            raise BadRequest(f"{param}: at most {MAX_FILTER_VALUES} values")
        d = defs[param]
        if d.op in (">=", "<=") and len(values) > 1:
            raise BadRequest(f"{param} takes one value, not {len(values)}")
        typed = tuple(dict.fromkeys(_value(resource, d, v) for v in values))
        normalised[param] = [_text(v) for v in typed]
        conditions.append(Condition(d.field, d.op, typed))  # type: ignore[arg-type]
    return normalised, tuple(conditions)


def _text(value: str | bool | datetime) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _value(resource: Resource, d: FilterDef, raw: Any) -> str | bool | datetime:
    if isinstance(raw, bool) and d.kind is Kind.BOOL:
        return raw
    if not isinstance(raw, str):
        raise BadRequest(f"{d.param} must be a string, not {type(raw).__name__}")
    value = raw.strip()
    if not value or len(value) > MAX_FILTER_VALUE_CHARS or "\x00" in value:
        raise BadRequest(f"{d.param} needs a value of 1 to {MAX_FILTER_VALUE_CHARS} characters")
    field = resource.field(d.field)
    if d.kind is Kind.TIMESTAMP:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise BadRequest(
                f"{d.param} must be an ISO-8601 timestamp such as 2024-01-01T00:00:00Z "
                f"or a date such as 2024-01-01, not {raw!r}", param=d.param) from None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if d.kind is Kind.BOOL:
        if value.lower() not in ("true", "false"):
            raise BadRequest(f"{d.param} must be true or false, not {raw!r}",
                             allowed=["true", "false"])
        return value.lower() == "true"
    if d.kind is Kind.ENUM and field.choices is not None:
        allowed = list(field.choices())
        if value not in allowed:
            raise BadRequest(f"{d.param} must be one of: {', '.join(allowed)}; not {raw!r}",
                             param=d.param, allowed=allowed)
    if d.kind in (Kind.ID, Kind.REF) and ID_PATTERN.fullmatch(value) is None:
        raise BadRequest(f"{d.param} must be an id (1-64 characters of letters, digits "
                         f"and _ . : -), not {raw!r}", param=d.param)
    return value
