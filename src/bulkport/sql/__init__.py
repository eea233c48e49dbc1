"""Named SQL statements, loaded once from ``queries.sql``.

Each statement sits under a ``-- name: <name>`` line; :data:`QUERIES` maps the
name to a :class:`psycopg.sql.SQL` ready to execute.
"""

from __future__ import annotations

import re
from importlib import resources

from psycopg import sql

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load() -> dict[str, sql.SQL]:
    text = (resources.files(__package__) / "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, sql.SQL] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = sql.SQL("\n".join(lines).rstrip().rstrip(";"))
    return queries


QUERIES: dict[str, sql.SQL] = _load()
