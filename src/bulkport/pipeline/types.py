"""Data handed between the import stages."""

from __future__ import annotations

from collections.abc import Collection
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
    """One record as read from the file; ``data`` is None when it could not be parsed.

    ``data`` is a dict (JSON formats), a list in the order of the CSV header, or
    a plain CSV line (no quotes, one value per column) as a ``str``.
    """

    row: int
    data: dict[str, Any] | list[Any] | str | None
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
class Deferred:
    """A validated record held back until the record it repeats is settled."""

    values: list[Any]
    row: int
    data: Any


@dataclass(slots=True)
class PreparedBatch:
    """A batch after parsing and field validation, ready for the database."""

    #: Clean rows in COPY text: ``[id, *other columns, row, id_given]`` (staging order).
    rows: list[list[str]] = field(default_factory=list)
    #: Natural key of each clean row as the database compares it (None: no key).
    keys: list[str | None] = field(default_factory=list)
    #: Record as parsed, for each clean row (for database rejections).
    originals: list[Any] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Records consumed from the file once this batch commits.
    checkpoint: int = 0
    #: Input bytes consumed once this batch commits (progress and ETA).
    bytes_processed: int = 0
    #: Insert mode: the clean rows as one COPY text payload for the target table.
    payload: str | None = None
    #: Insert mode: indexes of rows whose id or key may repeat one of an earlier batch.
    candidates: list[int] = field(default_factory=list)
    #: Clean records repeating an id or key staged earlier in the batch: next round.
    deferred: list[Deferred] = field(default_factory=list)

    def originals_for(self, wanted: Collection[int]) -> dict[int, Any]:
        """The parsed records behind the clean rows with these record numbers."""
        if not wanted:
            return {}
        return {int(values[-2]): data for values, data in zip(self.rows, self.originals,
                                                              strict=True)
                if int(values[-2]) in wanted}

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.rejected) + len(self.deferred)
