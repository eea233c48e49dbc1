"""Validate stage: raw records → :class:`ValidRecord` or :class:`Rejected`.

Field rules only, as the file alone decides them (:mod:`bulkport.resources.compile`
and, for plain CSV lines, :mod:`bulkport.resources.fastcsv`). Nothing here
depends on the import mode or the database: repeats within the file, insert
defaults and COPY payloads are the stage's (:mod:`bulkport.pipeline.stage`),
stored keys and references the loader's (:mod:`bulkport.pipeline.load`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bulkport.pipeline.headers import key_mapper
from bulkport.pipeline.types import RawRecord, RecordError, RecordShape, Rejected, ValidRecord
from bulkport.resources.base import Resource, truncate_value
from bulkport.resources.compile import compile_validator
from bulkport.resources.fastcsv import compile_fast_csv


class RecordValidator:
    """The field rules of one resource, for the records of one file.

    ``columns`` is the CSV header when records are lists; ``None`` for dicts.
    ``fields`` is the field each column feeds (:func:`bulkport.pipeline.headers.
    match_columns`; default: the column names themselves); JSON objects have their
    keys matched the same way, with ``column_map``. Rejected records keep the
    file's own column names.
    """

    def __init__(self, resource: Resource, columns: Sequence[str] | None = None,
                 fields: Sequence[str | None] | None = None,
                 column_map: dict[str, str] | None = None, delimiter: str = ",") -> None:
        self.resource = resource
        self.columns = list(columns) if columns is not None else None
        # Unmatched columns get the name "", which no field has: they are ignored.
        matched = ([f or "" for f in fields] if fields is not None and columns is not None
                   else self.columns)
        self._validate = compile_validator(resource, matched)
        self._fast = (compile_fast_csv(resource, matched, delimiter) if matched is not None
                      else None)
        #: A plain CSV line (``str`` record) splits on this.
        self.delimiter = delimiter
        self._remap = key_mapper(resource, column_map)
        self.shape = RecordShape(tuple(self.columns) if self.columns is not None else None,
                                 delimiter,
                                 {name: i for i, name in enumerate(resource.column_names)})

    def validate(self, records: Iterable[RawRecord]
                 ) -> tuple[list[ValidRecord], list[Rejected]]:
        """The valid records and the rejected ones, each in file order."""
        valid: list[ValidRecord] = []
        rejected: list[Rejected] = []
        accept = valid.append
        validate = self._validate
        fast = self._fast
        remap = self._remap
        delimiter = self.delimiter
        shape = self.shape
        for rec in records:
            data = rec.data
            if data is None:
                rejected.append(Rejected(rec.row, rec.original, [
                    RecordError(rec.row, None, None, "malformed_record",
                                rec.malformed or "the record could not be parsed")]))
                continue
            if data.__class__ is str:  # a plain CSV line
                fast_values = fast(data) if fast is not None else None
                if fast_values is not None:
                    accept(ValidRecord(rec.row, fast_values, data, shape))
                    continue
                values, problems = validate(data.split(delimiter))
            else:
                values, problems = validate(remap(data) if data.__class__ is dict else data)
            if problems is not None:
                rejected.append(Rejected(rec.row, shape.original(data), [
                    RecordError(rec.row, p.field, truncate_value(p.value), p.code, p.message)
                    for p in problems]))
                continue
            accept(ValidRecord(rec.row, values, data, shape))
        return valid, rejected
