"""Rows with every awkward value an export must carry unchanged.

Spreadsheet-formula cells (``=``, ``+``, ``-``, ``@``, apostrophes before them),
quotes, commas, CR/LF, backslashes, tabs, unicode, leading/trailing spaces,
nulls, empty and awkward tag lists, timestamps with and without microseconds,
prefixed ids. Every value is one the importer accepts, so the same rows must
survive export -> import -> export byte for byte.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg

from bulkport import db
from bulkport.pipeline.export.filesink import write_export
from bulkport.pipeline.export_spec import parse_spec

NAMES = [
    "Ada Lovelace", "=SUM(A1:A9)", "-minus", "+plus", "@at", "'=already quoted",
    "''+two apostrophes", "'plain apostrophe", 'say "hi", then go', "line\nbreak",
    "crlf\r\nbreak", "back\\slash \\N", "tab\there", "Zoë 😀 日本語", "  padded  ",
    "=HYPERLINK(\"http://x\")",
]
TAGS: list[list[str]] = [[], ["python"], ["a,b", 'quo"te', "ünï", "=f"], ["x y", "[bracket]"]]
BASE = datetime(2024, 1, 1, tzinfo=UTC)
USERS = 40
ARTICLES = 30
COMMENTS = 60


def ts(i: int) -> datetime:
    micro = 0 if i % 3 else 123456 * (i % 7 + 1) % 1_000_000
    return BASE + timedelta(days=i, seconds=i * 37, microseconds=micro)


def users() -> list[tuple[Any, ...]]:
    rows = []
    for i in range(USERS):
        email = f"user{i}@example.com" if i % 5 else f"=u{i}+tag@example.com"
        if i == 6:
            email = f"-u{i}@example.org"
        rows.append((f"usr_{i:04d}" if i % 2 else f"u-{i:04d}.x:y", email,
                     NAMES[i % len(NAMES)], ("admin", "author", "reader")[i % 3], i % 4 != 0,
                     ts(i), ts(i + 100)))
    return rows


def articles() -> list[tuple[Any, ...]]:
    rows = []
    for i in range(ARTICLES):
        status = ("draft", "published", "archived")[i % 3]
        rows.append((
            f"cm_{i:04x}", f"article-{i}", NAMES[(i + 3) % len(NAMES)],
            None if i % 4 == 0 else NAMES[(i + 5) % len(NAMES)],
            f"Body {i}: " + NAMES[i % len(NAMES)], users()[i % USERS][0], TAGS[i % len(TAGS)],
            None if status == "draft" else ts(i + 200), status, ts(i + 10), ts(i + 20),
        ))
    return rows


def comments() -> list[tuple[Any, ...]]:
    arts = articles()
    return [(f"c-{i:05d}", NAMES[i % len(NAMES)] + f" #{i}", arts[i % ARTICLES][0],
             users()[(i * 7) % USERS][0], ts(i + 300)) for i in range(COMMENTS)]


def seed(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO users (id, email, name, role, active, created_at, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)", users())
        cur.executemany("INSERT INTO articles (id, slug, title, description, body, author_id, tags,"
                        " published_at, status, created_at, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", articles())
        cur.executemany("INSERT INTO comments (id, body, article_id, user_id, created_at)"
                        " VALUES (%s, %s, %s, %s, %s)", comments())


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables, in id order, as Python values."""
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
            for t in ("users", "articles", "comments")}


def empty_resources(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE comments, articles, users CASCADE")


def export_bytes(url: str, resource: str, fmt: str, fields: Any = None,
                 filters: dict[str, Any] | None = None) -> bytes:
    """The export as one statement writes it to a file: the reference streams must equal."""
    spec = parse_spec(resource, fmt, fields, filters or {})
    out = io.BytesIO()
    with db.connect(url, autocommit=True) as c:
        records, size = write_export(c, spec, out)
    data = out.getvalue()
    assert size == len(data)
    if fmt == "ndjson":  # one line per record
        assert records == data.count(b"\n")
    elif fmt == "json":
        assert records == len(orjson.loads(data))
    return data
