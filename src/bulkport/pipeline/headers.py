"""Matching a file's column names (CSV headers, JSON keys) to the fields of a resource.

A name matches a field case-insensitively once trimmed, with ``-`` and spaces
read as ``_`` (``Email``, `` email ``, ``Created At`` and ``created-at`` all
match). An explicit ``column_map`` (source name -> field) takes precedence over
that rule. docs/imports.md, "Column names", lists the decisions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bulkport.errors import BadRequest, MissingRequiredFields, UnreadableFile
from bulkport.pipeline.csvreader import header_from_head
from bulkport.resources.base import Resource

#: Entries accepted in one ``column_map`` (a resource has a handful of fields).
MAX_MAP_ENTRIES = 100
#: How close a header must be to a field name to be suggested (difflib ratio).
SUGGEST_CUTOFF = 0.6


def normalise(name: str) -> str:
    """The form names are compared in: trimmed, lower case, ``-`` and spaces as ``_``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def parse_column_map(value: Any, resource: Resource) -> dict[str, str] | None:
    """Validate a ``column_map`` (a dict, or its JSON text from a form field).

    A target that is not a field of the resource, or two sources mapped onto the
    same field, is a 400 that says which fields exist.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadRequest('column_map must be a JSON object such as {"E-mail": "email"}'
                             ) from None
    fields = resource.column_names
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest('column_map must be a JSON object of source column -> field name, '
                         'such as {"E-mail": "email"}', fields=fields)
    if len(value) > MAX_MAP_ENTRIES:
        raise BadRequest(f"column_map has more than {MAX_MAP_ENTRIES} entries")
    unknown = sorted({v for v in value.values() if not resource.has_field(v)})
    if unknown:
        raise BadRequest(f"column_map maps onto unknown field(s) {', '.join(unknown)}; the "
                         f"fields of {resource.name} are: {', '.join(fields)}",
                         unknown=unknown, fields=fields)
    targets: dict[str, list[str]] = {}
    for source, target in value.items():
        targets.setdefault(target, []).append(source)
    twice = {t: s for t, s in targets.items() if len(s) > 1}
    if twice:
        target, sources = next(iter(twice.items()))
        raise BadRequest(f"column_map maps {' and '.join(map(repr, sources))} onto the same "
                         f"field {target!r}; map one column per field", conflicts=twice)
    return dict(value)


def field_for(name: str, resource: Resource, column_map: dict[str, str] | None) -> str | None:
    """The field one column (or JSON key) feeds, by the rules of :func:`match_columns`."""
    mapped = column_map or {}
    norm = normalise(name)
    target = mapped.get(name) or {normalise(k): v for k, v in mapped.items()}.get(norm)
    return target or {normalise(f.name): f.name for f in resource.fields}.get(norm)


def match_columns(columns: Sequence[str], resource: Resource,
                  column_map: dict[str, str] | None = None) -> list[str | None]:
    """The field each column feeds (``None``: ignored), in column order.

    A column named in ``column_map`` (exactly, else by its normalised name) goes
    where the map says; any other column matches the field of its normalised
    name. Two columns feeding one field make the file unreadable: which one is
    meant cannot be known.
    """
    by_norm = {normalise(f.name): f.name for f in resource.fields}
    mapped = column_map or {}
    mapped_norm = {normalise(k): v for k, v in mapped.items()}
    out: list[str | None] = []
    for column in columns:
        target = mapped.get(column) or mapped_norm.get(normalise(column))
        out.append(target or by_norm.get(normalise(column)))
    sources: dict[str, list[str]] = {}
    for column, target in zip(columns, out, strict=True):
        if target is not None:
            sources.setdefault(target, []).append(column)
    twice = {t: s for t, s in sources.items() if len(s) > 1}
    if twice:
        target, cols = next(iter(twice.items()))
        raise UnreadableFile(
            f"the columns {', '.join(map(repr, cols))} all match the field {target!r}; "
            "keep one, or send a column_map naming the one to use")
    return out


def scorer(resource: Resource, column_map: dict[str, str] | None
           ) -> Callable[[list[str]], int]:
    """``score(columns)``: how many columns feed a field (for delimiter detection)."""
    by_norm = {normalise(f.name) for f in resource.fields}
    mapped = {normalise(k) for k in column_map or {}}

    def score(columns: list[str]) -> int:
        return len({normalise(c) for c in columns} & (by_norm | mapped))

    return score


def missing_required(fields: Sequence[str | None], resource: Resource) -> list[str]:
    """The required fields no column feeds."""
    present = set(fields)
    return [f.name for f in resource.fields if f.required and f.name not in present]


def suggest_map(columns: Sequence[str], fields: Sequence[str | None],
                resource: Resource, missing: Sequence[str]) -> dict[str, str]:
    """A ``column_map`` for the missing fields, from the closest unmatched header names."""
    free = {normalise(c): c for c, f in zip(columns, fields, strict=True) if f is None}
    suggestion: dict[str, str] = {}
    for name in missing:
        close = difflib.get_close_matches(normalise(name), list(free), n=1,
                                          cutoff=SUGGEST_CUTOFF)
        if not close:
            # "E-mail" reads as "e_mail": compare without the separators too.
            bare = {k.replace("_", ""): k for k in free}
            close = [bare[m] for m in difflib.get_close_matches(
                name.replace("_", ""), list(bare), n=1, cutoff=SUGGEST_CUTOFF)]
        if close:
            suggestion[free.pop(close[0])] = name
    return suggestion


def check_required(columns: Sequence[str], fields: Sequence[str | None],
                   resource: Resource) -> None:
    """Raise :class:`MissingRequiredFields` (422) when a required field has no column."""
    missing = missing_required(fields, resource)
    if not missing:
        return
    suggestion = suggest_map(columns, fields, resource, missing)
    hint = (f"; send column_map {orjson.dumps(suggestion).decode()}" if suggestion
            else f"; name the columns after the fields ({', '.join(resource.column_names)}) "
                 "or send a column_map")
    # The message becomes a job's failure_reason: PostgreSQL text cannot hold NUL.
    shown = ", ".join(columns).replace("\x00", "\ufffd")
    raise MissingRequiredFields(
        f"the CSV header has no column for the required field(s) {', '.join(missing)} "
        f"of {resource.name} (headers: {shown}){hint}",
        missing=missing, headers=list(columns), suggested_column_map=suggestion)


def check_head(head: bytes, resource: Resource, column_map: dict[str, str] | None,
               delimiter: str | None = None, encoding: str = "utf-8") -> None:
    """422 when the CSV header in ``head`` (a file's first block) lacks a required field.

    A header that cannot be judged from the block (no line end in it, not
    decodable, two columns for one field) passes: the worker reads the whole
    file and fails the job with the reason.
    """
    found = header_from_head(head, delimiter, scorer(resource, column_map), encoding)
    if found is None or not any(found[0]):
        return
    columns = found[0]
    if any("\x00" in c for c in columns):
        return  # binary, or UTF-16 without its mark: the worker says what it looks like
    try:
        fields = match_columns(columns, resource, column_map)
    except UnreadableFile:
        return
    check_required(columns, fields, resource)


def key_mapper(resource: Resource, column_map: dict[str, str] | None
               ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``remap(record)``: a JSON object with its keys renamed to field names.

    A record whose keys are all field names already (the common case) is
    returned as it is; the renaming of each distinct key is computed once.
    """
    names = frozenset(resource.column_names)
    by_norm = {normalise(n): n for n in names}
    mapped = column_map or {}
    mapped_norm = {normalise(k): v for k, v in mapped.items()}
    cache: dict[str, str | None] = {}

    def rename(key: str) -> str | None:
        if key not in cache:
            norm = normalise(key)
            cache[key] = mapped.get(key) or mapped_norm.get(norm) or by_norm.get(norm)
        return cache[key]

    def remap(record: dict[str, Any]) -> dict[str, Any]:
        if not mapped and names.issuperset(record):
            return record
        out: dict[str, Any] = {}
        for key, value in record.items():
            target = rename(key)
            # An exact field name wins over another key that normalises onto it.
            if target is not None and (target not in out or key == target):
                out[target] = value
        return out

    return remap
