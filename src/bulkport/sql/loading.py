"""Set-based loading statements, derived from a :class:`Resource`.

A batch is COPYed into a temporary staging table; one statement then inserts
(or upserts) the rows that pass the database checks and returns every staged
row that was *not* written, with one boolean per reason:

* ``dup_id`` - the id is taken (insert mode),
* ``dup_key`` - the natural key is taken by another row,
* ``bad_<ref>`` - a reference points at no row,
* ``retry`` - nothing above, yet not written: a concurrent writer took the key
  after our snapshot, two staged rows resolve to the same stored row, or (upsert)
  the row holding the record's key is written by an earlier record of the batch,
  which may free that key (``waits``: records apply in file order, so this one
  must see that write). The caller loads such rows again, in file order.

Identifiers come from the resource declaration and are quoted with
``psycopg.sql``; no user input is ever formatted into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from psycopg import sql

from bulkport.resources import RESOURCES, Resource


@dataclass(frozen=True)
class LoadSQL:
    create_stage: sql.Composed
    truncate_stage: sql.Composed
    copy_stage: sql.Composed
    statement: sql.Composed
    #: Names of the boolean columns after ``row`` in the statement's result.
    flags: tuple[str, ...]
    #: Fast path: probe of typed arrays (ids, natural keys, references) returning
    #: ``(ordinal, *probe_flags)`` for the rows that would be rejected.
    probe: sql.Composed
    probe_flags: tuple[str, ...]
    #: Fast path: COPY straight into the table, and its insert defaults as text.
    copy_target: sql.Composed
    defaults: sql.Composed


def stage_columns(resource: Resource) -> list[tuple[str, str]]:
    """``(name, type)`` of the staging table: the fields, then row number and id_given."""
    cols = [(f.name, "text" if f.name == "id" else f.sql_type) for f in resource.fields]
    return [*cols, ("row", "bigint"), ("id_given", "boolean")]


def _key_part(resource: Resource, alias: str, name: str) -> sql.Composable:
    col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
    return sql.SQL("lower({})").format(col) if resource.natural_key_ci else col


def _key_match(resource: Resource, left: str, right: str) -> sql.Composable:
    """``left`` and ``right`` have the same natural key (each of its fields equal)."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_key_part(resource, left, n), _key_part(resource, right, n))
        for n in resource.natural_key)


def _ref_flags(resource: Resource) -> list[tuple[str, sql.Composable]]:
    flags: list[tuple[str, sql.Composable]] = []
    for f in resource.references:
        assert f.references is not None
        flags.append((
            f"bad_{f.name}",
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} r WHERE r.id = st.{})").format(
                sql.Identifier(RESOURCES[f.references].table), sql.Identifier(f.name)),
        ))
    return flags


def _insert_values(resource: Resource, alias: str) -> sql.Composed:
    exprs: list[sql.Composable] = []
    for f in resource.fields:
        col = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(f.name))
        if f.insert_default:
            exprs.append(sql.SQL("coalesce({}, {})").format(col, sql.SQL(f.insert_default)))
        else:
            exprs.append(col)
    return sql.SQL(", ").join(exprs)


@cache
def load_sql(resource_name: str, mode: str) -> LoadSQL:
    resource = RESOURCES[resource_name]
    table = sql.Identifier(resource.table)
    stage = sql.Identifier(f"_stage_{resource.name}")
    cols = stage_columns(resource)
    create = sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS"
    ).format(stage, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in cols
    ))
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        stage, sql.SQL(", ").join(sql.Identifier(n) for n, _ in cols))
    target_cols = sql.SQL(", ").join(sql.Identifier(n) for n in resource.column_names)
    refs = _ref_flags(resource)
    ref_select = sql.SQL("").join(sql.SQL(", {} AS {}").format(e, sql.Identifier(n))
                                  for n, e in refs)
    ref_any = sql.SQL("").join(sql.SQL(" OR {}").format(sql.Identifier(n)) for n, _ in refs)
    nk = resource.natural_key

    if mode == "insert":
        key_flag = (
            sql.SQL("EXISTS (SELECT 1 FROM {} t WHERE {})").format(
                table, _key_match(resource, "t", "st"))
            if nk else sql.SQL("false")
        )
        statement = sql.SQL("""
WITH s AS (
    SELECT st.*,
           EXISTS (SELECT 1 FROM {table} t WHERE t.id = st.id) AS dup_id,
           {key_flag} AS dup_key,
           false AS retry{ref_select}
    FROM {stage} st
),
ins AS (
    INSERT INTO {table} ({target_cols})
    SELECT {values} FROM s WHERE NOT (s.dup_id OR s.dup_key{ref_any})
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT s.row, s.dup_id, s.dup_key, s.retry{ref_cols} FROM s
WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = s.id)
""").format(table=table, key_flag=key_flag, ref_select=ref_select, stage=stage,
            target_cols=target_cols, values=_insert_values(resource, "s"), ref_any=ref_any,
            ref_cols=_ref_cols(refs))
    else:
        key_join = (
            sql.SQL("LEFT JOIN {} bykey ON {}").format(table, _key_match(resource, "bykey", "st"))
            if nk else sql.SQL("")
        )
        key_match = sql.SQL("bykey.id") if nk else sql.SQL("NULL::text")
        sets = []
        for f in resource.fields[1:]:
            col = sql.Identifier(f.name)
            if f.update_default:
                sets.append(sql.SQL("{} = coalesce(ok.{}, {})").format(
                    col, col, sql.SQL(f.update_default)))
            else:
                sets.append(sql.SQL("{} = ok.{}").format(col, col))
        statement = sql.SQL("""
WITH m AS (
    SELECT st.*, {key_match} AS key_match, coalesce(byid.id, {key_match}) AS target{ref_select}
    FROM {stage} st
    LEFT JOIN {table} byid ON st.id_given AND byid.id = st.id
    {key_join}
),
firsts AS (
    SELECT m.target, min(m.row) AS first_row FROM m WHERE m.target IS NOT NULL GROUP BY m.target
),
w AS (
    SELECT m.*, coalesce(f.first_row < m.row, false) AS waits
    FROM m LEFT JOIN firsts f ON f.target = m.key_match
),
s AS (
    SELECT w.*, false AS dup_id,
           (w.key_match IS NOT NULL AND w.key_match <> w.target AND NOT w.waits) AS dup_key,
           (w.waits OR (w.target IS NOT NULL AND count(*) OVER (PARTITION BY w.target) > 1))
               AS retry
    FROM w
),
ok AS (SELECT * FROM s WHERE NOT (s.dup_key OR s.retry{ref_any})),
upd AS (
    UPDATE {table} t SET {sets}
    FROM ok WHERE t.id = ok.target
    RETURNING ok.row
),
ins AS (
    INSERT INTO {table} ({target_cols})
    SELECT {values} FROM ok WHERE ok.target IS NULL
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT s.row, s.dup_id, s.dup_key, s.retry{ref_cols} FROM s
WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.row = s.row)
  AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = s.id)
""").format(key_match=key_match, ref_select=ref_select,
            stage=stage, table=table, key_join=key_join, ref_any=ref_any,
            sets=sql.SQL(", ").join(sets), target_cols=target_cols,
            values=_insert_values(resource, "ok"), ref_cols=_ref_cols(refs))
    flags = ("dup_id", "dup_key", "retry", *(n for n, _ in refs))
    truncate = sql.SQL("TRUNCATE {}").format(stage)
    probe, probe_flags = _probe(resource)
    copy_target = sql.SQL("COPY {} ({}) FROM STDIN").format(table, target_cols)
    defaults = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("({})::text").format(sql.SQL(f.insert_default))
        for f in resource.fields if f.insert_default))
    return LoadSQL(create, truncate, copy, statement, flags, probe, probe_flags,
                   copy_target, defaults)


def _probe(resource: Resource) -> tuple[sql.Composed, tuple[str, ...]]:
    """The fast path's conflict probe over ``unnest`` of typed arrays."""
    table = sql.Identifier(resource.table)
    arrays = ["id"]
    flags = [("dup_id", sql.SQL("EXISTS (SELECT 1 FROM {} t WHERE t.id = s.id)").format(table))]
    if resource.natural_key:
        # One array per key field, as the stage computed the key (lower-cased when the
        # key compares case-insensitively); cast back to the field's type.
        match = []
        for i, name in enumerate(resource.natural_key):
            arrays.append(f"key_{i}")
            match.append(sql.SQL("{} = s.{}::{}").format(
                _key_part(resource, "t", name), sql.Identifier(f"key_{i}"),
                sql.SQL(resource.field(name).sql_type)))
        flags.append(("dup_key", sql.SQL("EXISTS (SELECT 1 FROM {} t WHERE {})").format(
            table, sql.SQL(" AND ").join(match))))
    for f in resource.references:
        assert f.references is not None
        arrays.append(f.name)
        flags.append((f"bad_{f.name}", sql.SQL(
            "NOT EXISTS (SELECT 1 FROM {} r WHERE r.id = s.{})").format(
                sql.Identifier(RESOURCES[f.references].table), sql.Identifier(f.name))))
    names = tuple(n for n, _ in flags)
    probe = sql.SQL("""
SELECT * FROM (
    SELECT s.ord, {flag_exprs}
    FROM unnest({arrays}) WITH ORDINALITY AS s({cols}, ord)
) p
WHERE {any_flag}
""").format(
        flag_exprs=sql.SQL(", ").join(sql.SQL("{} AS {}").format(e, sql.Identifier(n))
                                      for n, e in flags),
        arrays=sql.SQL(", ").join(sql.SQL("%b::text[]") for _ in arrays),
        cols=sql.SQL(", ").join(sql.Identifier(a) for a in arrays),
        any_flag=sql.SQL(" OR ").join(sql.Identifier(n) for n in names),
    )
    return probe, names


def _ref_cols(refs: list[tuple[str, sql.Composable]]) -> sql.Composable:
    return sql.SQL("").join(sql.SQL(", s.{}").format(sql.Identifier(n)) for n, _ in refs)
