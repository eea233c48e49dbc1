"""The declarative resource model.

A :class:`Resource` lists its fields once; everything else derives from it:
record validation (:meth:`Resource.compile_validator`), the staging table and
COPY column list, the insert/upsert statements (``bulkport.sql.loading``), the
export column list and the OpenAPI record schema (``bulkport.api.record_schemas``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
#: How an empty value travels in PostgreSQL's COPY text format.
NULL = "\\N"
#: Longest value echoed back in an error entry (characters).
ERROR_VALUE_MAX_CHARS = 200
#: Nesting kept of a value echoed in an error entry or stored as a rejected record.
KEPT_JSON_DEPTH = 32
#: A CSV cell the exporter neutralised: one added apostrophe before ``= + - @``
#: (see :mod:`bulkport.sql.exporting`); the CSV importer removes exactly one.
FORMULA_ESCAPED = re.compile(r"'+[-=+@]")


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
#: Free-text kinds whose CSV cells are neutralised against spreadsheet formulas.
#: Ids and references are not: their alphabet (``[A-Za-z0-9_.:-]``) cannot form a
#: function call, and they must stay verbatim for joins.
FORMULA_KINDS = frozenset({Kind.TEXT, Kind.EMAIL})


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
    #: Fields identifying a record when the id is absent (e.g. ``("email",)``, or
    #: ``("user_id", "article_id")`` for a composite key): no two rows share them.
    #: In-file repeats, the ``duplicate_*`` errors and the upsert's match derive from it.
    natural_key: tuple[str, ...] = ()
    #: Whether the natural key compares case-insensitively (``lower()`` of each field).
    natural_key_ci: bool = False
    #: Cross-field rules over the clean record (COPY text values, NULL for empty, None
    #: for a field that failed its own rule) and the raw record getter:
    #: ``check(clean, raw) -> problems``.
    checks: tuple[Callable[[dict[str, str], Callable[[str], Any]], list[Problem]], ...] = ()
    #: Load order position: referenced resources load first.
    order: int = 0
    description: str = ""
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})
        assert self.fields[0].name == "id", "the first field of a resource is its id"
        assert isinstance(self.natural_key, tuple), "natural_key is a tuple of field names"
        for name in self.natural_key:
            assert self._by_name[name].required, f"natural key field {name} must be required"

    @property
    def table(self) -> str:
        return self.name

    @property
    def key_name(self) -> str:
        """The natural key's name in errors: its fields joined by commas (``a,b``)."""
        return ",".join(self.natural_key)

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

    @property
    def parents(self) -> list[str]:
        """The resources this one references, each once: their rows load first."""
        return sorted({f.references for f in self.fields if f.references})


def clip_depth(value: Any, depth: int = KEPT_JSON_DEPTH) -> Any:
    """``value`` as orjson can write it: lists/objects deeper than ``depth`` become ``"…"``.

    orjson refuses to write more than 255 levels, yet an NDJSON line may hold up to
    1024 (orjson reads them): such a value in an error entry or a rejected record
    failed the whole job instead of that one record.
    """
    if isinstance(value, dict):
        return {k: clip_depth(v, depth - 1) for k, v in value.items()} if depth > 0 else "…"
    if isinstance(value, list):
        return [clip_depth(v, depth - 1) for v in value] if depth > 0 else "…"
    if isinstance(value, int) and not -(2**63) <= value < 2**64:  # past what orjson writes
        return float(value) if abs(value) < 10**300 else "…"
    return value


def truncate_value(value: Any) -> Any:
    """Shorten a value echoed in an error entry to a sane length."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        return value
    else:
        try:
            text = orjson.dumps(value, default=str).decode()
        except TypeError:  # nested deeper than orjson writes (255 levels): show the top
            text = orjson.dumps(clip_depth(value), default=str).decode()
    if len(text) > ERROR_VALUE_MAX_CHARS:
        return text[:ERROR_VALUE_MAX_CHARS] + "…"
    return text
