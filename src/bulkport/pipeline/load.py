"""Load stage: a prepared batch into PostgreSQL, set-based, inside the caller's transaction.

The whole batch goes in with one COPY and one statement. Rows the statement
could not settle (``retry``) are loaded again one at a time; if the statement
fails outright (a constraint no check foresaw, a value PostgreSQL refuses), the
batch is isolated record by record under savepoints so that good records are
never dropped with a bad one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bulkport.pipeline.types import RecordError
from bulkport.resources import Resource
from bulkport.resources.base import truncate_value
from bulkport.sql.loading import LoadSQL, load_sql

log = logging.getLogger(__name__)

#: SQLSTATE classes that mean the server or connection is in trouble, not the data.
TRANSIENT_ERRORS = (psycopg.OperationalError, pg_errors.SerializationFailure,
                    pg_errors.DeadlockDetected)


class Loader:
    """Loads batches of one resource in one mode over one connection."""

    def __init__(self, conn: psycopg.Connection[Any], resource: Resource, mode: str) -> None:
        self.conn = conn
        self.resource = resource
        self.sql: LoadSQL = load_sql(resource.name, mode)
        self._messages = self._build_messages(resource)
        conn.execute(self.sql.create_stage)

    @staticmethod
    def _build_messages(resource: Resource) -> dict[str, tuple[str | None, str, str]]:
        nk = resource.natural_key
        msgs: dict[str, tuple[str | None, str, str]] = {
            "dup_id": ("id", "duplicate_id", "a record with this id already exists"),
            "dup_key": (nk, f"duplicate_{nk}", f"a record with this {nk} already exists"),
        }
        for f in resource.references:
            msgs[f"bad_{f.name}"] = (
                f.name, f"invalid_{f.name}", f"{f.name} does not reference an existing "
                f"{(f.references or '').rstrip('s')}",
            )
        return msgs

    def load(self, rows: Sequence[list[Any]]) -> dict[int, list[RecordError]]:
        """Write ``rows``; return the database's rejections by row number."""
        if not rows:
            return {}
        by_row = {r[0]: r for r in rows}
        try:
            with self.conn.transaction():
                result = self._run(rows)
        except TRANSIENT_ERRORS:
            raise
        except psycopg.Error as exc:
            log.info("batch statement failed (%s); isolating records", exc.sqlstate)
            return self._isolate(rows)
        rejected: dict[int, list[RecordError]] = {}
        retry: list[list[Any]] = []
        for row, flags in result:
            errors = self._errors(by_row[row], flags)
            if errors is None:
                retry.append(by_row[row])
            else:
                rejected[row] = errors
        if retry:
            rejected.update(self._isolate(retry))
        return rejected

    def _run(self, rows: Sequence[list[Any]]) -> list[tuple[int, dict[str, bool]]]:
        cur = self.conn.cursor()
        cur.execute(self.sql.truncate_stage)
        with cur.copy(self.sql.copy_stage) as copy:
            write = copy.write_row
            for r in rows:
                write(r)
        cur.execute(self.sql.statement)
        names = self.sql.flags
        return [(rec[0], dict(zip(names, rec[1:], strict=True))) for rec in cur.fetchall()]

    def _errors(self, row: list[Any], flags: dict[str, bool]) -> list[RecordError] | None:
        errors = []
        for name, hit in flags.items():
            if hit and name != "retry":
                field, code, message = self._messages[name]
                value = self._value(row, field)
                errors.append(RecordError(row[0], field, value, code, message))
        if errors:
            return errors
        return None  # only "retry" (or nothing) set: load it again on its own

    def _value(self, row: list[Any], field: str | None) -> Any:
        if field is None:
            return None
        if field == "id":
            return row[1]
        return truncate_value(row[self.resource.column_names.index(field) + 2])

    def _isolate(self, rows: Sequence[list[Any]]) -> dict[int, list[RecordError]]:
        """Load rows one by one under savepoints; a row that still fails is rejected."""
        rejected: dict[int, list[RecordError]] = {}
        for r in rows:
            try:
                with self.conn.transaction():
                    result = self._run([r])
            except TRANSIENT_ERRORS:
                raise
            except psycopg.Error as exc:
                diag = exc.diag
                rejected[r[0]] = [RecordError(
                    r[0], diag.column_name, None, "rejected_by_database",
                    f"the database refused the record: {diag.message_primary or exc}",
                )]
                continue
            if result:
                errors = self._errors(r, result[0][1])
                rejected[r[0]] = errors or [RecordError(
                    r[0], None, None, "conflict",
                    "the record conflicts with a row written concurrently; retry it",
                )]
        return rejected

