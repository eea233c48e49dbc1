"""Compile a resource's declared fields into one fast record validator.

This is the import hot path: every record of every file passes through the
function built here, so each field gets a specialised coercion chosen once per
job (no per-record dispatch on the field kind), and values come out already in
PostgreSQL's COPY text format (escaped, ``\\N`` for empty) so that loading is a
plain join. Records may be dicts (NDJSON/JSON) or lists in the order of a CSV
header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bulkport.resources.base import (
    EMAIL_PATTERN,
    FORMULA_ESCAPED,
    FORMULA_KINDS,
    ID_PATTERN,
    NULL,
    Field,
    FieldError,
    Kind,
    Problem,
    Resource,
)

Coerce = Callable[[Any], str | None]
Validator = Callable[[Any], tuple[list[Any], list[Problem] | None]]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_BOOLS = {"true": "t", "false": "f", "True": "t", "False": "f", "TRUE": "t", "FALSE": "f"}
#: The common timestamp shape (``2024-01-01T00:00:00Z``) that PostgreSQL reads as
#: Python does; other accepted shapes are normalised through ``datetime``.
_PLAIN_TS_LEN = 20


def copy_escape(s: str) -> str:
    """Escape a value for COPY text format."""
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        return s.translate(_ESCAPES)
    return s


def copy_unescape(s: str) -> str:
    """Inverse of :func:`copy_escape` (for the rare value holding a backslash)."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append({"t": "\t", "n": "\n", "r": "\r"}.get(s[i + 1], s[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def compile_validator(resource: Resource, columns: Sequence[str] | None = None) -> Validator:
    """Return ``validate(record) -> (values, problems)``.

    ``values`` follows :attr:`Resource.column_names`: the id (``None`` when absent
    and optional) then COPY-text values; ``problems`` is ``None`` for a valid
    record, else every problem of the record (not only the first). With
    ``columns``, records are lists in that order; otherwise dicts.

    The function is generated as Python source with one straight-line block per
    field (the loop, the per-field wrapper calls and their tuple unpacking cost
    more than the checks themselves on narrow records).
    """
    names = resource.column_names
    env: dict[str, Any] = {"FieldError": FieldError, "Problem": Problem, "NULL": NULL,
                           "formula_escaped": FORMULA_ESCAPED.match}
    lines = ["def validate(record):", "    problems = None"]
    if columns is not None:
        position = {c: i for i, c in enumerate(columns)}
        lines.append("    n = len(record)")
    for i, f in enumerate(resource.fields):
        env[f"c{i}"] = _MAKERS[f.kind](f)
        if columns is None:
            lines.append(f"    v = record.get({f.name!r})")
        elif f.name in position:
            lines.append(f"    v = record[{position[f.name]}] if n > {position[f.name]} else None")
        else:
            lines.append("    v = None")
        if f.kind is Kind.ID and not f.required:
            empty = f"f{i} = None"
        elif f.required:
            env[f"e{i}"] = Problem(f.name, f"{f.name}_required", f"{f.name} is required")
            empty = (f"f{i} = None; problems = (problems or []) + "
                     f"[Problem({f.name!r}, e{i}.code, e{i}.message, v)]")
        else:
            empty = f"f{i} = NULL"
        lines += [
            "    if v is None or (v.__class__ is str and (not v or v.isspace())):",
            f"        {empty}",
            "    else:",
        ]
        if columns is not None and f.kind in FORMULA_KINDS:
            # CSV only: undo the exporter's formula neutralisation ("'=x" -> "=x").
            lines.append("        if v[0] == \"'\" and formula_escaped(v): v = v[1:]")
        lines += [
            "        try:",
            f"            f{i} = c{i}(v)",
            "        except FieldError as exc:",
            f"            f{i} = None",
            f"            problems = (problems or []) + [Problem({f.name!r}, exc.code, "
            "exc.message, v)]",
        ]
    values = ", ".join(f"f{i}" for i in range(len(names)))
    lines.append(f"    values = [{values}]")
    if resource.checks:
        env["checks"] = resource.checks
        env["names"] = names
        env["raw_getter"] = _raw_getter(names, columns)
        # Checks run even when other fields failed (every problem of a record is
        # reported at once); a field that failed is None and its checks stay silent.
        lines += [
            "    clean = dict(zip(names, values))",
            "    raw = raw_getter(record)",
            "    for check in checks:",
            "        found = check(clean, raw)",
            "        if found:",
            "            problems = (problems or []) + found",
        ]
    lines.append("    return values, problems")
    exec("\n".join(lines), env)  # source built above from the declarations only
    validate: Validator = env["validate"]
    return validate


def _raw_getter(names: list[str], columns: Sequence[str] | None) -> Callable[[Any], Any]:
    """``raw_getter(record)(field_name)`` -> the field's value as uploaded."""
    if columns is None:
        return lambda record: record.get
    position = {c: i for i, c in enumerate(columns)}

    def getter(record: Any) -> Callable[[str], Any]:
        def get(name: str) -> Any:
            i = position.get(name)
            return record[i] if i is not None and i < len(record) else None
        return get

    return getter


# --- coercions: raw value (str from CSV, any JSON value) -> COPY text ------------------


def _as_text(raw: Any, name: str, code: str | None = None) -> str:
    """``raw`` as text; ``code`` is the field's format code (SPEC §2), if it has one."""
    if raw.__class__ is str:
        s: str = raw
    elif isinstance(raw, bool | dict | list):
        raise FieldError(code or f"invalid_{name}", f"{name} must be a string")
    else:
        s = str(raw)
    if "\x00" in s:
        raise FieldError(code or f"invalid_{name}", f"{name} contains a NUL character")
    return s


def _make_id(f: Field) -> Coerce:
    name = f.name
    match = ID_PATTERN.fullmatch

    def coerce(raw: Any) -> str:
        s = raw if raw.__class__ is str else _as_text(raw, name, "invalid_id_format")
        if match(s) is None:
            raise FieldError("invalid_id_format",
                             f"{name} must be 1-64 characters of letters, digits and _ . : -")
        return s

    return coerce


def _make_email(f: Field) -> Coerce:
    name = f.name
    match = EMAIL_PATTERN.fullmatch

    def coerce(raw: Any) -> str:
        s = _as_text(raw, name, "invalid_email_format").strip()
        if len(s) > 254 or match(s) is None:
            raise FieldError("invalid_email_format", f"{name} is not a valid email address")
        return copy_escape(s)

    return coerce


def _make_enum(f: Field) -> Coerce:
    assert f.choices is not None
    name = f.name
    allowed = tuple(f.choices())
    allowed_set = frozenset(allowed)
    message = f"{name} must be one of: {', '.join(allowed)}"

    def coerce(raw: Any) -> str:
        if raw.__class__ is str and raw in allowed_set:
            return raw
        raise FieldError(f"invalid_{name}", message)

    return coerce


def _make_bool(f: Field) -> Coerce:
    name = f.name

    def coerce(raw: Any) -> str:
        if raw is True:
            return "t"
        if raw is False:
            return "f"
        if raw.__class__ is str:
            out = _BOOLS.get(raw) or _BOOLS.get(raw.strip().lower())
            if out is not None:
                return out
        raise FieldError(f"invalid_{name}", f"{name} must be true or false")

    return coerce


def _make_timestamp(f: Field) -> Coerce:
    name = f.name
    parse = datetime.fromisoformat
    message = f"{name} must be an ISO-8601 timestamp (2024-01-01T00:00:00Z)"
    range_message = f"{name} must fall in the years 0001-9999 in UTC"

    def coerce(raw: Any) -> str:
        if raw.__class__ is str:
            try:
                dt = parse(raw)
            except ValueError:
                try:
                    dt = parse(raw.strip())
                except ValueError:
                    raise FieldError(f"invalid_{name}", message) from None
            if len(raw) == _PLAIN_TS_LEN and raw[19] == "Z" and raw[10] == "T":
                return raw
            if dt.tzinfo is None:
                return dt.isoformat() + "+00:00"  # sessions run in UTC: naive means UTC
            try:
                # SPEC §1: years 0001-9999 in UTC. PostgreSQL stores 0001-01-01T00:00+14:00
                # (year 0 in UTC) and 9999-12-31T23:59-14:00 (year 10000), but their
                # export (0001-12-31T10:00:00 BC, 10000-…) would not import back.
                dt.astimezone(UTC)
            except OverflowError:
                raise FieldError(f"invalid_{name}", range_message) from None
            return dt.isoformat()
        raise FieldError(f"invalid_{name}", message)

    return coerce


def _make_tags(f: Field) -> Coerce:
    name = f.name

    def coerce(raw: Any) -> str:
        v = raw
        if v.__class__ is str:
            s = v.strip()
            if s.startswith("["):
                try:
                    v = orjson.loads(s)
                except orjson.JSONDecodeError:
                    raise FieldError(f"invalid_{name}",
                                     f"{name} is not a valid JSON array") from None
            else:
                v = [t.strip() for t in s.split(",") if t.strip()]
        if not isinstance(v, list) or not all(t.__class__ is str for t in v):
            raise FieldError(f"invalid_{name}", f"{name} must be a list of strings")
        if any("\x00" in t for t in v):
            raise FieldError(f"invalid_{name}", f"{name} contains a NUL character")
        literal = ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in v)
        return copy_escape("{" + literal + "}")

    return coerce


def _make_text(f: Field) -> Coerce:
    name = f.name
    max_words = f.max_words
    pattern = re.compile(f.pattern).fullmatch if f.pattern else None
    pattern_code = f.pattern_code or f"invalid_{name}"
    pattern_message = f"{name} must match {f.pattern}"
    words_code = f"{name}_exceeds_{max_words}_words"

    def coerce(raw: Any) -> str:
        s = (raw if raw.__class__ is str and "\x00" not in raw
             else _as_text(raw, name, pattern_code if pattern is not None else None))
        if pattern is not None and pattern(s) is None:
            raise FieldError(pattern_code, pattern_message)
        if max_words is not None and len(s.split(None, max_words)) > max_words:
            raise FieldError(words_code, f"{name} must have at most {max_words} words")
        return copy_escape(s)

    return coerce


_MAKERS: dict[Kind, Callable[[Field], Coerce]] = {
    Kind.ID: _make_id, Kind.EMAIL: _make_email, Kind.ENUM: _make_enum, Kind.BOOL: _make_bool,
    Kind.TIMESTAMP: _make_timestamp, Kind.TAGS: _make_tags, Kind.TEXT: _make_text,
    Kind.REF: _make_text,
}
