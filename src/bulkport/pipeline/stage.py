"""Stage: a batch's valid records → rounds ready for the database.

The stage settles what the file decides beyond field rules, and renders what
the loader writes:

* **In-file repeats.** A record that repeats the id or natural key of an earlier
  record of the same batch is deferred to a later round, loaded once the first
  is settled, so records apply in file order: in ``insert`` mode the repeat is a
  ``duplicate_*`` if its twin was written and loads normally if its twin was
  rejected; in ``upsert`` mode it updates the row its twin wrote. In ``upsert``
  mode every record after a deferred one is deferred with it (an upsert's id may
  resolve to another key's row, so no later record is known not to touch it).
* **Repeats across batches** (insert mode): a Bloom filter of the job's ids and
  keys (:class:`SeenFilter`) marks the records that may repeat one an earlier
  batch loaded, which the loader probes before its optimistic COPY.
* **Completed rows**: a generated id where the record has none, and the insert
  defaults (evaluated once per job, :func:`insert_defaults`) where it leaves a
  field empty.
* **COPY payloads**, rendered here in the producer thread, off the thread that
  waits on PostgreSQL: the target table's in insert mode, the staging table's
  (:func:`staging_text`) in upsert mode.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from bulkport.pipeline.types import Key, Mode, PreparedBatch, RawRecord, StagedRound, ValidRecord
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources.base import NULL, Resource
from bulkport.resources.compile import copy_unescape
from bulkport.sql.loading import load_sql

KeyOf = Callable[[list[Any]], Key | None]


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

    def check_and_add(self, value: Key | None, other: Key | None = None) -> bool:
        """Whether ``value`` or ``other`` may have been added before; add both.

        ``None`` is skipped. Two values per call: a record's id and key are checked
        in one call, the hot path of staging (the body is unrolled for the same reason).
        """
        mask, bits, seen = self._MASK, self._bits, False
        if value is not None:
            h = hash(value)
            a, b = h & mask, (h >> 25) & mask
            seen = bool((bits[a >> 3] >> (a & 7)) & 1 and (bits[b >> 3] >> (b & 7)) & 1)
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)
        if other is not None:
            h = hash(other)
            a, b = h & mask, (h >> 25) & mask
            if (bits[a >> 3] >> (a & 7)) & 1 and (bits[b >> 3] >> (b & 7)) & 1:
                seen = True
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)
        return seen


def prepare(validator: RecordValidator, stager: Stager, records: Iterable[RawRecord],
            checkpoint: int = 0, bytes_processed: int = 0) -> PreparedBatch:
    """Validate ``records`` and stage the valid ones: one batch, its first round staged.

    ``checkpoint`` and ``bytes_processed``: where the run stands once it commits.
    """
    valid, rejected = validator.validate(records)
    return PreparedBatch(rejected, stager.stage(valid), size=len(valid) + len(rejected),
                         checkpoint=checkpoint, bytes_processed=bytes_processed)


def key_function(resource: Resource) -> KeyOf | None:
    """``key_of(values)``: a record's natural key as the database compares it.

    One value for a one-field key, a tuple for a composite key; unescaped from
    COPY text, lower-cased when the key compares case-insensitively. ``None``
    when the resource has no natural key.
    """
    names = resource.column_names
    index = [names.index(n) for n in resource.natural_key]
    ci = resource.natural_key_ci
    if not index:
        return None

    def part(value: str) -> str:
        if "\\" in value:
            value = copy_unescape(value)
        return value.lower() if ci else value

    if len(index) == 1:
        [i] = index
        return lambda values: part(values[i])
    return lambda values: tuple([part(values[i]) for i in index])


def insert_defaults(conn: psycopg.Connection[Any], resource: Resource
                    ) -> list[tuple[int, str]]:
    """``(field index, COPY text)`` of the resource's insert defaults, evaluated now.

    Evaluated once per job (so ``now()`` is the job's start for every record
    that leaves ``created_at`` empty) and applied as rows are staged.
    """
    names = resource.column_names
    fields = [f for f in resource.fields if f.insert_default]
    if not fields:
        return []
    values = conn.execute(load_sql(resource.name, Mode.INSERT).defaults).fetchone()
    assert values is not None
    return [(names.index(f.name), v) for f, v in zip(fields, values, strict=True)]


def staging_text(records: Sequence[ValidRecord]) -> str:
    """The records in COPY text for the staging table: values, ``row``, ``id_given``."""
    # Staged values are all text: the id is set and empty values are NULL.
    return "".join(["\t".join(r.values)  # type: ignore[arg-type]
                    + ("\t%d\tt\n" if r.id_given else "\t%d\tf\n") % r.row for r in records])


class Stager:
    """Stages the valid records of one job's batches, round by round."""

    def __init__(self, resource: Resource, mode: Mode,
                 defaults: Sequence[tuple[int, str]] = ()) -> None:
        self.resource = resource
        self.mode = mode
        #: Insert mode: ``(field index, COPY text)`` for empty optional values, so that
        #: rows go straight into the table (upserts keep NULL: "leave the stored value").
        self.defaults = list(defaults) if mode is Mode.INSERT else []
        self.key_of = key_function(resource)
        #: A one-field key's position: computed inline below, the hot path (a call per
        #: record costs about as much as the rest of staging it).
        self.key_index = (resource.column_names.index(resource.natural_key[0])
                          if len(resource.natural_key) == 1 else None)
        self.new_id: Callable[[], str] = lambda: str(uuid.uuid4())
        self.seen = SeenFilter() if mode is Mode.INSERT else None

    def stage(self, records: Sequence[ValidRecord]) -> StagedRound:
        """A round of ``records``; those repeating an earlier one wait in ``deferred``.

        A record sharing its id or natural key with a record already in the round
        waits for the next round, staged (:meth:`stage` of ``deferred``) once this
        one is settled: so it meets its twin as a stored row (``duplicate_*`` in
        insert mode, an update in upsert mode) or, when the twin was rejected, as
        if it were the first. Records thereby apply in file order, whatever the
        batch size.
        """
        out = StagedRound()
        staged, keys, deferred, candidates = out.records, out.keys, out.deferred, out.candidates
        seen = self.seen
        seen_ids: set[str] = set()
        seen_keys: set[Key] = set()
        key_of = self.key_of
        key_index = self.key_index
        key_ci = self.resource.natural_key_ci
        new_id = self.new_id
        defaults = self.defaults
        # Upsert: once a record waits for the next round, the records after it wait too.
        # Its id may resolve to the row of another key (upsert by email), so no later
        # record can be known not to touch that row; applied before it, it would
        # break file order. Insert mode resolves nothing: a repeat is a same id or key.
        chain_all = self.mode is Mode.UPSERT
        waiting = False
        for rec in records:
            if waiting:
                deferred.append(rec)
                continue
            values = rec.values
            rid = values[0]
            key: Key | None
            if key_index is not None:
                text: str = values[key_index]  # type: ignore[assignment]  # required: set
                if "\\" in text:
                    text = copy_unescape(text)
                key = text.lower() if key_ci else text
            else:
                key = key_of(values) if key_of is not None else None
            if (rid is not None and rid in seen_ids) or (key is not None and key in seen_keys):
                deferred.append(rec)
                waiting = chain_all
                # A later record repeating this one's id or key must wait for it too.
                if rid is not None:
                    seen_ids.add(rid)
                if key is not None:
                    seen_keys.add(key)
                continue
            for i, value in defaults:
                if values[i] == NULL:
                    values[i] = value
            if rid is None:
                rid = values[0] = new_id()
                rec.id_given = False
            # A generated id is new: only a given one may repeat an earlier batch's.
            if seen is not None and seen.check_and_add(rid if rec.id_given else None, key):
                candidates.append(len(staged))
            staged.append(rec)
            keys.append(key)
            seen_ids.add(rid)
            if key is not None:
                seen_keys.add(key)
        if staged:
            out.payload = (
                "\n".join(["\t".join(r.values) for r in staged])  # type: ignore[arg-type]
                + "\n" if self.mode is Mode.INSERT else staging_text(staged))
        return out
