"""The declarative resource model.

A :class:`Resource` lists its fields once; everything else derives from it:
record validation (:meth:`Resource.compile_validator`), the staging table and
COPY column list, the insert/upsert statements (``bulkport.sql.loading``), the
export column list and the OpenAPI record schema (``bulkport.api.schemas``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
#: Longest value echoed back in an error entry (characters).
ERROR_VALUE_MAX_CHARS = 200


class Kind(enum.Enum):
    """Field kinds: each maps to one PostgreSQL type and one coercion."""

    ID = "id"
    TEXT = "text"
    EMAIL = "email"
    ENUM = "enum"
    REF = "ref"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    TAGS = "tags"

    @property
    def sql_type(self) -> str:
        return _SQL_TYPES.get(self, "text")


_SQL_TYPES = {Kind.BOOL: "boolean", Kind.TIMESTAMP: "timestamptz", Kind.TAGS: "text[]"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One field-level problem of one record, before it gets its row number."""

    field: str
    code: str
    message: str
    value: Any = None


class FieldError(Exception):
    """Raised by a coercion; becomes a :class:`Problem`."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Field:
    """One column of a resource."""

    name: str
    kind: Kind
    required: bool = False
    #: SQL used on insert when the record leaves the field empty.
    insert_default: str | None = None
    #: SQL used on update when the record leaves the field empty
    #: (``None`` = set it to NULL / the empty value as given).
    update_default: str | None = None
    choices: Callable[[], Sequence[str]] | None = None
    #: Resource name this field references (foreign key to its ``id``).
    references: str | None = None
    max_words: int | None = None
    #: Regular expression a text value must match, and the code when it does not.
    pattern: str | None = None
    pattern_code: str | None = None
    filterable: bool = False
    description: str = ""

    @property
    def sql_type(self) -> str:
        return self.kind.sql_type


@dataclass(frozen=True)
class Resource:
    """A bulk-loadable table: its fields, natural key and references."""

    name: str
    fields: tuple[Field, ...]
    #: Field identifying a record when the id is absent (e.g. ``email``).
    natural_key: str | None = None
    #: Whether the natural key compares case-insensitively (``lower()``).
    natural_key_ci: bool = False
    #: Whether a record may omit its id (one is then generated).
    id_optional: bool = True
    #: Cross-field rules: record -> problems.
    checks: tuple[Callable[[dict[str, Any]], list[Problem]], ...] = ()
    #: Load order position: referenced resources load first.
    order: int = 0
    description: str = ""
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})
        assert self.fields[0].name == "id", "the first field of a resource is its id"

    @property
    def table(self) -> str:
        return self.name

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    @property
    def references(self) -> list[Field]:
        return [f for f in self.fields if f.references]

    def compile_validator(self) -> Callable[[dict[str, Any]], tuple[list[Any], list[Problem]]]:
        """Return ``validate(record) -> (values, problems)``.

        ``values`` is in :attr:`column_names` order, ready for COPY; it is only
        meaningful when ``problems`` is empty. Every problem of the record is
        reported, not only the first.
        """
        steps = [(f.name, f.required, _coercer(f)) for f in self.fields]
        checks = self.checks

        def validate(record: dict[str, Any]) -> tuple[list[Any], list[Problem]]:
            values: list[Any] = []
            problems: list[Problem] = []
            get = record.get
            for name, required, coerce in steps:
                raw = get(name)
                if raw is None or raw == "" or (raw.__class__ is str and raw.isspace()):
                    if required:
                        problems.append(
                            Problem(name, f"{name}_required", f"{name} is required", raw)
                        )
                    values.append(None)
                    continue
                try:
                    values.append(coerce(raw))
                except FieldError as exc:
                    problems.append(Problem(name, exc.code, exc.message, raw))
                    values.append(None)
            if checks and not problems:
                clean = dict(zip(self.column_names, values, strict=True))
                for check in checks:
                    problems.extend(check(clean))
            return values, problems

        return validate


def truncate_value(value: Any) -> Any:
    """Shorten a value echoed in an error entry to a sane length."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        return value
    else:
        text = orjson.dumps(value, default=str).decode()
    if len(text) > ERROR_VALUE_MAX_CHARS:
        return text[:ERROR_VALUE_MAX_CHARS] + "…"
    return text


# --- coercions: raw value (str from CSV, any JSON value) -> typed value --------------


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        if isinstance(value, bool | dict | list):
            raise FieldError(f"invalid_{name}", f"{name} must be a string")
        value = str(value)
    if "\x00" in value:
        raise FieldError(f"invalid_{name}", f"{name} contains a NUL character")
    return value


def _coercer(f: Field) -> Callable[[Any], Any]:
    name = f.name
    kind = f.kind
    if kind is Kind.ID:

        def coerce_id(v: Any) -> str:
            s = v if v.__class__ is str else _text(v, name)
            if ID_PATTERN.fullmatch(s) is None:
                raise FieldError(
                    "invalid_id_format",
                    f"{name} must be 1-64 characters of letters, digits and _ . : -",
                )
            return s

        return coerce_id
    if kind is Kind.EMAIL:

        def coerce_email(v: Any) -> str:
            s = _text(v, name).strip()
            if len(s) > 254 or EMAIL_PATTERN.fullmatch(s) is None:
                raise FieldError("invalid_email_format", f"{name} is not a valid email address")
            return s

        return coerce_email
    if kind is Kind.ENUM:
        assert f.choices is not None
        choices = f.choices

        def coerce_enum(v: Any) -> str:
            s = _text(v, name)
            allowed = choices()
            if s not in allowed:
                raise FieldError(f"invalid_{name}", f"{name} must be one of: {', '.join(allowed)}")
            return s

        return coerce_enum
    if kind is Kind.BOOL:

        def coerce_bool(v: Any) -> bool:
            if v is True or v is False:
                return bool(v)
            if isinstance(v, str):
                low = v.strip().lower()
                if low == "true":
                    return True
                if low == "false":
                    return False
            raise FieldError(f"invalid_{name}", f"{name} must be true or false")

        return coerce_bool
    if kind is Kind.TIMESTAMP:

        def coerce_ts(v: Any) -> datetime:
            if isinstance(v, str):
                try:
                    dt = datetime.fromisoformat(v.strip())
                except ValueError:
                    pass
                else:
                    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
            raise FieldError(
                f"invalid_{name}", f"{name} must be an ISO-8601 timestamp (2024-01-01T00:00:00Z)"
            )

        return coerce_ts
    if kind is Kind.TAGS:

        def coerce_tags(v: Any) -> list[str]:
            if isinstance(v, str):
                s = v.strip()
                if s.startswith("["):
                    try:
                        v = orjson.loads(s)
                    except orjson.JSONDecodeError:
                        raise FieldError(
                            f"invalid_{name}", f"{name} is not a valid JSON array"
                        ) from None
                else:
                    v = [t.strip() for t in s.split(",") if t.strip()]
            if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
                raise FieldError(f"invalid_{name}", f"{name} must be a list of strings")
            if any("\x00" in t for t in v):
                raise FieldError(f"invalid_{name}", f"{name} contains a NUL character")
            return v

        return coerce_tags
    max_words = f.max_words
    pattern = re.compile(f.pattern) if f.pattern else None
    pattern_code = f.pattern_code or f"invalid_{name}"

    def coerce_text(v: Any) -> str:
        s = v if v.__class__ is str and "\x00" not in v else _text(v, name)
        if pattern is not None and pattern.fullmatch(s) is None:
            raise FieldError(pattern_code, f"{name} must match {pattern.pattern}")
        if max_words is not None and len(s.split(None, max_words)) > max_words:
            raise FieldError(
                f"{name}_exceeds_{max_words}_words", f"{name} must have at most {max_words} words"
            )
        return s

    return coerce_text
