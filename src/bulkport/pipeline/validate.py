"""Field validation of a batch, and the in-batch part of duplicate handling.

Database checks (uniqueness against stored rows, references) happen in
:mod:`bulkport.pipeline.load`; here we settle what the file alone decides:
field rules, and records of the same batch that share an id or natural key.

A record that repeats the id or natural key of an earlier record of the same
batch is deferred to a second round, loaded after the first is settled, so
records apply in file order: in ``insert`` mode the repeat is a
``duplicate_*`` if its twin was written and loads normally if its twin was
rejected; in ``upsert`` mode it updates the row its twin wrote. In ``upsert``
mode every record after a deferred one is deferred with it (an upsert's id may
resolve to another key's row, so no later record is known not to touch it).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bulkport.errors import BadRequest
from bulkport.pipeline.headers import key_mapper
from bulkport.pipeline.types import Deferred, PreparedBatch, RawRecord, RecordError, Rejected
from bulkport.resources.base import NULL, Resource, truncate_value
from bulkport.resources.compile import compile_validator, copy_unescape
from bulkport.resources.fastcsv import compile_fast_csv


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


class SeenFilter:
    """A Bloom filter of the ids and natural keys a job has staged so far.

    It lets the loader probe, before its optimistic COPY, only the rows that may
    repeat a record of an earlier batch, instead of the whole batch. A false
    positive costs one probed row; there are no false negatives. 2**25 bits
    (4 MiB) with two probes keeps false positives near 1% for 2 million keys.
    """

    BITS = 1 << 25
    _MASK = BITS - 1

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS >> 3)

    def check_and_add(self, value: str) -> bool:
        """Whether ``value`` may have been added before; add it."""
        h = hash(value)
        a, b = h & self._MASK, (h >> 25) & self._MASK
        bits = self._bits
        seen = (bits[a >> 3] >> (a & 7)) & 1 and (bits[b >> 3] >> (b & 7)) & 1
        bits[a >> 3] |= 1 << (a & 7)
        bits[b >> 3] |= 1 << (b & 7)
        return bool(seen)


class BatchPreparer:
    """Turns raw records into a :class:`PreparedBatch` for one resource and mode.

    ``columns`` is the CSV header when records are lists; ``None`` for dicts.
    ``fields`` is the field each column feeds (:func:`bulkport.pipeline.headers.
    match_columns`; default: the column names themselves); JSON objects have their
    keys matched the same way, with ``column_map``. Rejected records keep the
    file's own column names.
    """

    def __init__(self, resource: Resource, mode: Mode,
                 columns: Sequence[str] | None = None,
                 insert_defaults: Sequence[tuple[int, str]] = (),
                 fields: Sequence[str | None] | None = None,
                 column_map: dict[str, str] | None = None, delimiter: str = ",") -> None:
        self.resource = resource
        self.mode = mode
        #: Insert mode: ``(column, COPY text)`` for empty optional values, so that rows
        #: go straight into the table (upserts keep NULL: "leave the stored value").
        self.insert_defaults = list(insert_defaults) if mode is Mode.INSERT else []
        self.columns = list(columns) if columns is not None else None
        # Unmatched columns get the name "", which no field has: they are ignored.
        matched = ([f or "" for f in fields] if fields is not None and columns is not None
                   else self.columns)
        self.validate = compile_validator(resource, matched)
        self.fast = (compile_fast_csv(resource, matched, delimiter) if matched is not None
                     else None)
        #: A plain CSV line (``str`` record) splits on this.
        self.delimiter = delimiter
        self.remap = key_mapper(resource, column_map)
        self.width = len(resource.fields)
        self.key_index = (
            resource.column_names.index(resource.natural_key) if resource.natural_key else None
        )
        self.key_ci = resource.natural_key_ci
        self.new_id: Callable[[], str] = lambda: str(uuid.uuid4())
        self.seen = SeenFilter() if mode is Mode.INSERT else None

    def original(self, data: Any) -> Any:
        """The record as uploaded, as stored with its errors (CSV rows become dicts)."""
        if self.columns is not None and isinstance(data, list | str):
            values = data.split(self.delimiter) if isinstance(data, str) else data
            return dict(zip(self.columns, values, strict=False))
        return data

    def prepare(self, records: Iterable[RawRecord]) -> PreparedBatch:
        """Validate ``records``; stage the clean ones, deferring in-file repeats."""
        batch = PreparedBatch()
        stage = self._stager(batch)
        validate = self.validate
        fast = self.fast
        original = self.original
        remap = self.remap
        delimiter = self.delimiter
        for rec in records:
            data = rec.data
            if data is None:
                batch.rejected.append(Rejected(rec.row, rec.original, [
                    RecordError(rec.row, None, None, "malformed_record",
                                rec.malformed or "the record could not be parsed")]))
                continue
            if data.__class__ is str:  # a plain CSV line
                fast_values = fast(data) if fast is not None else None
                if fast_values is not None:
                    stage(fast_values, rec.row, data)
                    continue
                values, problems = validate(data.split(delimiter))
            else:
                values, problems = validate(remap(data) if data.__class__ is dict else data)
            if problems is not None:
                batch.rejected.append(Rejected(rec.row, original(data), [
                    RecordError(rec.row, p.field, truncate_value(p.value), p.code, p.message)
                    for p in problems]))
                continue
            stage(values, rec.row, data)
        return self._finish(batch)

    def next_round(self, deferred: list[Deferred]) -> PreparedBatch:
        """Stage records deferred by the previous round (their twins are now settled)."""
        batch = PreparedBatch()
        stage = self._stager(batch)
        for d in deferred:
            stage(d.values, d.row, d.data)
        return self._finish(batch)

    def _finish(self, batch: PreparedBatch) -> PreparedBatch:
        """Insert mode: render the COPY payload here, in the prepare stage's thread."""
        if self.mode is Mode.INSERT and batch.rows:
            width = self.width
            batch.payload = "\n".join(["\t".join(r[:width]) for r in batch.rows]) + "\n"
        return batch

    def _stager(self, batch: PreparedBatch) -> Callable[[list[Any], int, Any], None]:
        """``stage(values, row, data)``: add a clean record to ``batch``.

        A record sharing its id or natural key with a record already staged in the
        batch is deferred to the next round, loaded once this one is settled: so it
        meets its twin as a stored row (``duplicate_*`` in insert mode, an update in
        upsert mode) or, when the twin was rejected, as if it were the first. Records
        are thereby applied in file order, whatever the batch size.
        """
        rows, keys, originals, deferred = batch.rows, batch.keys, batch.originals, batch.deferred
        candidates = batch.candidates
        seen = self.seen
        seen_ids: set[str] = set()
        seen_keys: set[str] = set()
        key_index = self.key_index
        key_ci = self.key_ci
        new_id = self.new_id
        defaults = self.insert_defaults

        # Upsert: once a record waits for the next round, the records after it wait too.
        # Its id may resolve to the row of another key (upsert by email), so no later
        # record can be known not to touch that row; applied before it, it would
        # break file order. Insert mode resolves nothing: a repeat is a same id or key.
        chain_all = self.mode is Mode.UPSERT
        waiting = False

        def stage(values: list[Any], row: int, data: Any) -> None:
            nonlocal waiting
            if waiting:
                deferred.append(Deferred(values, row, data))
                return
            rid = values[0]
            key = None
            if key_index is not None:
                key = values[key_index]
                if "\\" in key:
                    key = copy_unescape(key)
                if key_ci:
                    key = key.lower()
            if (rid is not None and rid in seen_ids) or (key is not None and key in seen_keys):
                deferred.append(Deferred(values, row, data))
                waiting = chain_all
                # A later record repeating this one's id or key must wait for it too.
                if rid is not None:
                    seen_ids.add(rid)
                if key is not None:
                    seen_keys.add(key)
                return
            for i, value in defaults:
                if values[i] == NULL:
                    values[i] = value
            if rid is None:
                rid = new_id()
                staged = [rid, *values[1:], str(row), "f"]
            else:
                staged = [*values, str(row), "t"]
            if seen is not None:
                # Both calls run: each adds its value.
                repeat = seen.check_and_add(rid) if staged[-1] == "t" else False
                if key is not None and seen.check_and_add(key):
                    repeat = True
                if repeat:
                    candidates.append(len(rows))
            rows.append(staged)
            keys.append(key)
            originals.append(data)
            seen_ids.add(rid)
            if key is not None:
                seen_keys.add(key)

        return stage
