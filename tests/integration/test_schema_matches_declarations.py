"""The migrated database agrees with the resource declarations.

The tables are written by hand in ``migrations/``; the declarations in
``bulkport/resources/`` drive validation, loading and export. This reads the
catalog of the migrated database and checks, for every declared resource: its
columns in order, their types, NOT NULL, defaults, the primary key, the unique
keys (the natural key, ``lower(email)`` for a case-insensitive one) and the
foreign keys. A column added, retyped or constrained on one side only fails here.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bulkport.resources import RESOURCES, Kind, Resource

#: The PostgreSQL type of each field kind (``format_type`` spelling), stated here.
PG_TYPES = {Kind.ID: "text", Kind.TEXT: "text", Kind.EMAIL: "text", Kind.ENUM: "text",
            Kind.REF: "text", Kind.BOOL: "boolean", Kind.TIMESTAMP: "timestamp with time zone",
            Kind.TAGS: "text[]"}

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, d.adbin IS NOT NULL
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
#: Every unique index of a table (primary key included): its key columns or expressions.
UNIQUE_KEYS = """
SELECT i.indisprimary,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true)
             FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k)
FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique
"""
FOREIGN_KEYS = """
SELECT array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
       c.confrelid::regclass::text,
       array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = 'f'
"""


def _natural_key(resource: Resource) -> tuple[str, ...]:
    """The natural key's fields, whether declared as one name or as several."""
    key: Any = resource.natural_key
    if key is None:
        return ()
    return (key,) if isinstance(key, str) else tuple(key)


def _not_null(resource: Resource, name: str) -> bool:
    """What the declaration implies: required, the id, or filled by an insert default."""
    f = resource.field(name)
    return f.required or f.kind is Kind.ID or f.insert_default is not None


RESOURCE_LIST = list(RESOURCES.values())
IDS = list(RESOURCES)


@pytest.mark.parametrize("resource", RESOURCE_LIST, ids=IDS)
def test_columns_types_not_null_and_defaults(conn: psycopg.Connection[Any],
                                            resource: Resource) -> None:
    rows = conn.execute(COLUMNS, (resource.table,)).fetchall()
    assert [r[0] for r in rows] == resource.column_names
    for name, pg_type, not_null, has_default in rows:
        f = resource.field(name)
        assert pg_type == PG_TYPES[f.kind], name
        assert not_null is _not_null(resource, name), name
        # an insert default fills an empty value in the insert statement; the
        # table gives the same default to rows written any other way
        assert has_default is (f.insert_default is not None), name


@pytest.mark.parametrize("resource", RESOURCE_LIST, ids=IDS)
def test_primary_and_unique_keys(conn: psycopg.Connection[Any],
                                 resource: Resource) -> None:
    rows = conn.execute(UNIQUE_KEYS, (resource.table,)).fetchall()
    primary = [keys for is_primary, keys in rows if is_primary]
    assert primary == [["id"]]
    expected = []
    key = _natural_key(resource)
    if key:
        expected.append([f"lower({k})" if resource.natural_key_ci else k for k in key])
    assert sorted(keys for is_primary, keys in rows if not is_primary) == sorted(expected)


@pytest.mark.parametrize("resource", RESOURCE_LIST, ids=IDS)
def test_foreign_keys(conn: psycopg.Connection[Any], resource: Resource) -> None:
    rows = conn.execute(FOREIGN_KEYS, (resource.table,)).fetchall()
    declared = sorted(([f.name], RESOURCES[f.references].table, ["id"])
                      for f in resource.references if f.references)
    assert sorted((cols, table, ref) for cols, table, ref in rows) == declared


def test_every_declared_resource_has_a_table(conn: psycopg.Connection[Any]) -> None:
    tables = {r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert {r.table for r in RESOURCES.values()} <= tables
