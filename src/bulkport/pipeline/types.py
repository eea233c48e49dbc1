"""Data handed between the import stages: read → validate → stage → load.

* reading yields :class:`RawRecord`;
* validation (:mod:`bulkport.pipeline.validate`) turns each into a
  :class:`ValidRecord` or a :class:`Rejected`;
* staging (:mod:`bulkport.pipeline.stage`) groups a batch's valid records into
  a :class:`StagedRound` (completed rows, natural keys, COPY payload), holding
  back in-file repeats for a later round;
* loading (:mod:`bulkport.pipeline.load`) writes rounds and returns the
  database's rejections by record number.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from bulkport.errors import BadRequest

#: A natural key as the database compares it: one value, or one per key field.
Key = str | tuple[str, ...]


class Mode(enum.StrEnum):
    INSERT = "insert"
    UPSERT = "upsert"


def parse_mode(value: str | None) -> Mode:
    try:
        return Mode((value or "insert").lower())
    except ValueError:
        allowed = [m.value for m in Mode]
        raise BadRequest(
            f"unknown mode {value!r}; use one of: {', '.join(allowed)}", allowed=allowed
        ) from None


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


@dataclass(frozen=True, slots=True)
class RecordShape:
    """How the records of one file are shaped: enough to give a record back as uploaded.

    Shared by every :class:`ValidRecord` of a job, so a record carries its parsed
    form only and the uploaded form is rebuilt for the few the database rejects.
    """

    #: The CSV header (records are lists or plain lines); ``None`` for JSON objects.
    columns: tuple[str, ...] | None
    #: A plain CSV line splits on this.
    delimiter: str
    #: Field name -> position in :attr:`ValidRecord.values`.
    index: dict[str, int]

    def original(self, data: Any) -> Any:
        """The record as uploaded, as stored with its errors (CSV rows become dicts)."""
        if self.columns is not None and isinstance(data, list | str):
            values = data.split(self.delimiter) if isinstance(data, str) else data
            return dict(zip(self.columns, values, strict=False))
        return data


@dataclass(slots=True)
class ValidRecord:
    """A record that passed every field rule, its values ready for the database."""

    row: int
    #: COPY text of each field, in declaration order (``Resource.column_names``):
    #: ``NULL`` for an empty value. The id is ``None`` until the stage generates one.
    values: list[str | None]
    #: The record as parsed (for the rejected-records download).
    data: Any
    shape: RecordShape
    #: Whether the file gave the id (the stage sets False when it generates one).
    id_given: bool = True

    def value(self, name: str) -> str | None:
        """The COPY text of field ``name``."""
        return self.values[self.shape.index[name]]

    @property
    def original(self) -> Any:
        """The record as uploaded."""
        return self.shape.original(self.data)


def _row(record: ValidRecord) -> int:
    return record.row


@dataclass(slots=True)
class StagedRound:
    """Valid records of a batch, completed and ready to be written in one go."""

    #: Clean records in file order: id set (generated when absent), insert defaults
    #: applied; ``values`` are the target table's columns in COPY text.
    records: list[ValidRecord] = field(default_factory=list)
    #: Natural key of each record as the database compares it (None: no key).
    keys: list[Key | None] = field(default_factory=list)
    #: The records as one COPY text payload: for the target table in insert mode,
    #: for the staging table (``row`` and ``id_given`` added) in upsert mode.
    payload: str | None = None
    #: Insert mode: indexes of records whose id or key may repeat one of an earlier batch.
    candidates: list[int] = field(default_factory=list)
    #: Valid records repeating an id or key of this round: the next round's.
    deferred: list[ValidRecord] = field(default_factory=list)

    @property
    def rows(self) -> list[list[str | None]]:
        """The records' values (target columns in COPY text)."""
        return [r.values for r in self.records]

    def by_row(self, wanted: Collection[int]) -> dict[int, ValidRecord]:
        """The records with these record numbers (rows of this round)."""
        if not wanted:
            return {}
        # Records are in file order: a binary search each, not a pass over the round
        # for the few rows the database rejected (a pass if the order was not kept).
        records = self.records
        found = {}
        for row in wanted:
            i = bisect_left(records, row, key=_row)
            if i < len(records) and records[i].row == row:
                found[row] = records[i]
        if len(found) < len(wanted):
            return {r.row: r for r in records if r.row in wanted}
        return found


@dataclass(slots=True)
class PreparedBatch:
    """A batch after validation and staging, ready for the database."""

    #: Records that failed reading or validation.
    rejected: list[Rejected] = field(default_factory=list)
    #: The first round of the batch's valid records.
    staged: StagedRound = field(default_factory=StagedRound)
    #: Records consumed from the file once this batch commits.
    checkpoint: int = 0
    #: Input bytes consumed once this batch commits (progress and ETA).
    bytes_processed: int = 0
    #: Records of the batch in all (rejected, staged, deferred and held).
    size: int = 0
    #: A chunk of a split import: valid records held back for the tail, which loads
    #: them in file order once every chunk is done (:mod:`bulkport.pipeline.chunked`).
    held: list[ValidRecord] = field(default_factory=list)

    @property
    def rows(self) -> list[list[str | None]]:
        """The first round's rows (target columns in COPY text)."""
        return self.staged.rows

    @property
    def deferred(self) -> Sequence[ValidRecord]:
        """Valid records held back for a later round."""
        return self.staged.deferred
