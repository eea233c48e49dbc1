"""Data handed between the import stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordError:
    """One problem of one record: ``{"row", "field", "value", "code", "message"}``."""

    row: int
    field: str | None
    value: Any
    code: str
    message: str

    def entry(self) -> dict[str, Any]:
        """The error without its row, as stored with the record."""
        return {"field": self.field, "value": self.value, "code": self.code,
                "message": self.message}


@dataclass(slots=True)
class RawRecord:
    """One record as read from the file; ``data`` is None when it could not be parsed."""

    row: int
    data: dict[str, Any] | None
    #: What to give back in the rejected-records download (the record as uploaded).
    original: Any
    #: Why the record could not be parsed (``malformed_record``).
    malformed: str | None = None


@dataclass(slots=True)
class Rejected:
    row: int
    original: Any
    errors: list[RecordError]


@dataclass(slots=True)
class PreparedBatch:
    """A batch after parsing and field validation, ready for the database."""

    #: Clean rows: ``[row, id, id_given, *other columns]`` in staging order.
    rows: list[list[Any]] = field(default_factory=list)
    #: Original record of each clean row, by row number (for database rejections).
    originals: dict[int, Any] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    #: Records consumed from the file once this batch commits.
    checkpoint: int = 0
    #: Input bytes consumed once this batch commits (progress and ETA).
    bytes_processed: int = 0
    #: Records of the file superseded by a later record in this batch (upsert).
    superseded: int = 0

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.rejected) + self.superseded
