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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bulkport.errors import BadRequest
from bulkport.pipeline.types import PreparedBatch, RawRecord, RecordError, Rejected
from bulkport.resources.base import Resource, truncate_value
from bulkport.resources.compile import compile_validator, copy_unescape


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
    """Turns raw records into a :class:`PreparedBatch` for one resource and mode.

    ``columns`` is the CSV header when records are lists; ``None`` for dicts.
    """

    def __init__(self, resource: Resource, mode: Mode,
                 columns: Sequence[str] | None = None) -> None:
        self.resource = resource
        self.mode = mode
        self.columns = list(columns) if columns is not None else None
        self.validate = compile_validator(resource, columns)
        self.width = len(resource.fields)
        self.key_index = (
            resource.column_names.index(resource.natural_key) if resource.natural_key else None
        )
        self.key_ci = resource.natural_key_ci
        self.new_id: Callable[[], str] = lambda: str(uuid.uuid4())

    def original(self, data: Any) -> Any:
        """The record as uploaded, as stored with its errors (CSV rows become dicts)."""
        if self.columns is not None and isinstance(data, list):
            return dict(zip(self.columns, data, strict=False))
        return data

    def prepare(self, records: Iterable[RawRecord]) -> PreparedBatch:
        batch = PreparedBatch()
        rows, keys, originals = batch.rows, batch.keys, batch.originals
        by_id: dict[str, int] = {}
        by_key: dict[str, int] = {}
        validate = self.validate
        key_index = self.key_index
        key_ci = self.key_ci
        upsert = self.mode is Mode.UPSERT
        original = self.original
        for rec in records:
            data = rec.data
            if data is None:
                batch.rejected.append(Rejected(rec.row, rec.original, [
                    RecordError(rec.row, None, None, "malformed_record",
                                rec.malformed or "the record could not be parsed")]))
                continue
            values, problems = validate(data)
            if problems is not None:
                batch.rejected.append(Rejected(rec.row, original(data), [
                    RecordError(rec.row, p.field, truncate_value(p.value), p.code, p.message)
                    for p in problems]))
                continue
            rid = values[0]
            key = None
            if key_index is not None:
                key = values[key_index]
                if "\\" in key:
                    key = copy_unescape(key)
                if key_ci:
                    key = key.lower()
            if upsert:
                target = by_id.get(rid) if rid is not None else None
                if target is None and key is not None:
                    target = by_key.get(key)
                if target is not None:
                    self._merge(batch, target, rec, values, key, by_key)
                    continue
            elif (rid is not None and rid in by_id) or (key is not None and key in by_key):
                batch.rejected.append(Rejected(rec.row, original(data),
                                               self._insert_duplicates(rec.row, rid, key,
                                                                       by_id, by_key)))
                continue
            if rid is None:
                rid = values[0] = self.new_id()
                values.append(str(rec.row))
                values.append("f")
            else:
                values.append(str(rec.row))
                values.append("t")
            idx = len(rows)
            rows.append(values)
            keys.append(key)
            originals.append(data)
            by_id[rid] = idx
            if key is not None:
                by_key[key] = idx
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
        key: str | None, by_key: dict[str, int],
    ) -> None:
        """Apply ``rec`` over the batch row ``idx`` (upsert: the later record wins)."""
        old = batch.rows[idx]
        if key is not None:
            other = by_key.get(key)
            if other is not None and other != idx:
                nk = self.resource.natural_key
                batch.rejected.append(Rejected(rec.row, self.original(rec.data), [RecordError(
                    rec.row, nk, truncate_value(key), f"duplicate_{nk}",
                    f"another record of the file already uses this {nk}")]))
                return
            old_key = batch.keys[idx]
            if old_key is not None:
                by_key.pop(old_key, None)
            by_key[key] = idx
        values[0] = old[0]  # the row keeps the id it was first staged with
        values.append(str(rec.row))
        values.append(old[-1])
        batch.rows[idx] = values
        batch.keys[idx] = key
        batch.originals[idx] = rec.data
        batch.superseded += 1
