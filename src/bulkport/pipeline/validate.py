"""Field validation of a batch, and the in-batch part of duplicate handling.

Database checks (uniqueness against stored rows, references) happen in
:mod:`bulkport.pipeline.load`; here we settle what the file alone decides:
field rules, and records of the same batch that share an id or natural key.

* ``insert``: the first record with an id / natural key wins; later ones are
  ``duplicate_id`` / ``duplicate_<key>``.
* ``upsert``: records are applied in file order, so a later record for the same
  row replaces the earlier one in the batch (the earlier one counts as applied,
  as it would have been had it been loaded alone).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from bulkport.errors import BadRequest
from bulkport.pipeline.types import PreparedBatch, RawRecord, RecordError, Rejected
from bulkport.resources.base import Resource, truncate_value


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


class BatchPreparer:
    """Turns raw records into a :class:`PreparedBatch` for one resource and mode."""

    def __init__(self, resource: Resource, mode: Mode) -> None:
        self.resource = resource
        self.mode = mode
        self.validate = resource.compile_validator()
        self.key_index = (
            resource.column_names.index(resource.natural_key) if resource.natural_key else None
        )
        self.key_ci = resource.natural_key_ci
        self.new_id: Callable[[], str] = lambda: str(uuid.uuid4())

    def prepare(self, records: Iterable[RawRecord]) -> PreparedBatch:
        batch = PreparedBatch()
        slots: dict[int, int] = {}  # row number -> index in batch.rows (upsert merging)
        by_id: dict[str, int] = {}
        by_key: dict[str, int] = {}
        validate = self.validate
        key_index = self.key_index
        upsert = self.mode is Mode.UPSERT
        for rec in records:
            if rec.data is None:
                batch.rejected.append(Rejected(rec.row, rec.original, [
                    RecordError(rec.row, None, None, "malformed_record",
                                rec.malformed or "the record could not be parsed")]))
                continue
            values, problems = validate(rec.data)
            if problems:
                batch.rejected.append(Rejected(rec.row, rec.data, [
                    RecordError(rec.row, p.field, truncate_value(p.value), p.code, p.message)
                    for p in problems]))
                continue
            rid = values[0]
            key = None
            if key_index is not None:
                key = values[key_index]
                if self.key_ci:
                    key = key.lower()
            if upsert:
                target = by_id.get(rid) if rid is not None else None
                if target is None and key is not None:
                    target = by_key.get(key)
                if target is not None:
                    self._merge(batch, target, rec, values, key, by_key, slots)
                    continue
            else:
                dupes = self._insert_duplicates(rec.row, rid, key, by_id, by_key)
                if dupes:
                    batch.rejected.append(Rejected(rec.row, rec.data, dupes))
                    continue
            given = rid is not None
            if not given:
                rid = self.new_id()
            idx = len(batch.rows)
            batch.rows.append([rec.row, rid, given, *values[1:]])
            batch.originals[rec.row] = rec.data
            by_id[rid] = idx
            if key is not None:
                by_key[key] = idx
            slots[rec.row] = idx
        return batch

    def _insert_duplicates(
        self, row: int, rid: str | None, key: str | None,
        by_id: dict[str, int], by_key: dict[str, int],
    ) -> list[RecordError]:
        errors = []
        if rid is not None and rid in by_id:
            errors.append(RecordError(row, "id", rid, "duplicate_id",
                                      "an earlier record in the file has the same id"))
        if key is not None and key in by_key:
            nk = self.resource.natural_key
            errors.append(RecordError(row, nk, truncate_value(key), f"duplicate_{nk}",
                                      f"an earlier record in the file has the same {nk}"))
        return errors

    def _merge(
        self, batch: PreparedBatch, idx: int, rec: RawRecord, values: list[Any],
        key: str | None, by_key: dict[str, int], slots: dict[int, int],
    ) -> None:
        """Apply ``rec`` over the batch row ``idx`` (upsert: the later record wins)."""
        old = batch.rows[idx]
        if key is not None:
            other = by_key.get(key)
            if other is not None and other != idx:
                nk = self.resource.natural_key
                batch.rejected.append(Rejected(rec.row, rec.data, [RecordError(
                    rec.row, nk, truncate_value(key), f"duplicate_{nk}",
                    f"another record of the file already uses this {nk}")]))
                return
            old_key = old[self.key_index + 2] if self.key_index is not None else None
            if old_key is not None:
                by_key.pop(old_key.lower() if self.key_ci else old_key, None)
            by_key[key] = idx
        old_row = old[0]
        batch.rows[idx] = [rec.row, old[1], old[2], *values[1:]]
        del batch.originals[old_row]
        batch.originals[rec.row] = rec.data
        del slots[old_row]
        slots[rec.row] = idx
        batch.superseded += 1
