"""A one-regex validator for the plain CSV lines that make up most files.

Most CSV lines hold no quotes, no backslashes, no tabs and nothing but ASCII.
For such a line, one regular expression generated from the resource
declaration (and the file's header) checks every field in a single C-level
pass, and a generated function turns the match into the values the general
validator (:mod:`bulkport.resources.compile`) would produce. A line the
expression does not accept — or accepts but whose timestamps do not parse — is
handed to the general validator, which remains the definition of every rule:
this path may only say "valid, and here are the values", never reject.

That is about three times cheaper per record than splitting the line and
validating field by field, and the import's Python work is what stands between
it and raw COPY speed (bench/README.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from bulkport.resources.base import FORMULA_KINDS, NULL, Kind, Resource

FastValidator = Callable[[str], list[Any] | None]

#: A cell that needs no COPY escaping and holds no CSV syntax. Every quantifier of a
#: cell pattern is possessive or unambiguous: a cell ends at the next comma whatever
#: it holds, so nothing is lost by never giving characters back, and a line the
#: pattern refuses costs time linear in its length. (``X*YX*``, the obvious "at
#: least one non-blank" form, backtracked quadratically: a 1 MiB cell of words
#: followed by a bad cell took hours.)
#: ``{d}`` is the file's delimiter (escaped for a character class): any of them works
#: the same way, so a semicolon file is validated as fast as a comma file.
_CELL = r'[^{d}"\\\t\r\n\x00]*+'
#: The same, with at least one non-blank character (a required value): the leading
#: blanks, the first non-blank, the rest.
_FILLED = r'[^\S\t\r\n]*+[^{d}"\\\t\r\n\x00\s][^{d}"\\\t\r\n\x00]*+'
#: The timestamp shape PostgreSQL reads exactly as Python does.
_TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
_ID = r"[A-Za-z0-9_.:-]{1,64}"
_EMAIL = r"[^@\s,{d}\"\\]+@[^@\s,{d}\"\\]+\.[^@\s,{d}\".\\]+"
_BOOL = {"true": "t", "false": "f"}


def compile_fast_csv(resource: Resource, columns: Sequence[str],
                     delimiter: str = ",") -> FastValidator | None:
    """Return ``fast(line) -> values | None`` for CSV lines with this header.

    ``columns`` name the field each column feeds (any other name: ignored).

    ``None`` (no fast path) for resources with cross-field rules or list fields,
    and for headers lacking a required field.
    """
    if resource.checks or any(f.kind is Kind.TAGS for f in resource.fields):
        return None
    index = {c: i for i, c in enumerate(columns)}
    if any(f.required and f.name not in index for f in resource.fields):
        return None  # every record lacks a required value: the general rules say so
    cells: list[str] = []
    env: dict[str, Any] = {"NULL": NULL, "BOOL": _BOOL, "parse": datetime.fromisoformat}
    body: list[str] = []
    groups: list[str] = []
    by_column = {f.name: f for f in resource.fields}
    # Inside a character class only \\ ] ^ - are special; a tab is already excluded.
    d = "" if delimiter == "\t" else re.escape(delimiter)
    for column in columns:
        f = by_column.get(column)
        if f is None:
            cells.append(_CELL.format(d=d))  # ignored column
            continue
        pattern = _cell_pattern(f, d)
        if f.kind in FORMULA_KINDS:
            # A leading ' may be an exported formula's neutralisation, which only the
            # general validator undoes.
            pattern = f"(?!')(?:{pattern})"
        cells.append(f"({pattern})")
        groups.append(f"g_{f.name}")
    for i, f in enumerate(resource.fields):
        g = f"g_{f.name}"
        if f.name not in index:
            body.append(f"    v{i} = {None if f.kind is Kind.ID else 'NULL'}")
            continue
        if f.kind is Kind.ID:
            body.append(f"    v{i} = {g} or None")
        elif f.kind is Kind.BOOL:
            body.append(f"    v{i} = BOOL[{g}] if {g} else NULL")
        elif f.kind is Kind.TIMESTAMP:
            body += [f"    if {g}:",
                     "        try:",
                     f"            parse({g})",
                     "        except ValueError:",
                     "            return None",
                     f"        v{i} = {g}",
                     "    else:",
                     f"        v{i} = NULL"]
        elif f.kind is Kind.EMAIL:
            body += [f"    if len({g}) > 254:", "        return None", f"    v{i} = {g}"]
        elif f.required:
            body.append(f"    v{i} = {g}")
        else:
            body.append(f"    v{i} = {g} if {g} and not {g}.isspace() else NULL")
        if f.max_words is not None:
            body += [f"    if len({g}.split(None, {f.max_words})) > {f.max_words}:",
                     "        return None"]
    if not groups:
        return None  # no resource column at all: every record fails the general rules
    env["match"] = re.compile(re.escape(delimiter).join(cells)).fullmatch
    unpack = ", ".join(groups) + ("," if len(groups) == 1 else "")
    source = "\n".join([
        "def fast(line):",
        "    m = match(line)",
        "    if m is None:",
        "        return None",
        f"    {unpack} = m.groups()",
        *body,
        f"    return [{', '.join(f'v{i}' for i in range(len(resource.fields)))}]",
    ])
    exec(source, env)  # source built above from the declarations only
    fast: FastValidator = env["fast"]
    return fast


def _cell_pattern(f: Any, d: str) -> str:
    kind = f.kind
    if kind is Kind.ID:
        return _ID if f.required else f"(?:{_ID})?"
    if kind is Kind.EMAIL:
        return _EMAIL.format(d=d)
    if kind is Kind.ENUM:
        return "|".join(re.escape(c) for c in f.choices())
    if kind is Kind.BOOL:
        return "true|false|"
    if kind is Kind.TIMESTAMP:
        return f"{_TIMESTAMP}|" if not f.required else _TIMESTAMP
    if f.pattern:
        return f.pattern if f.required else f"(?:{f.pattern})?"
    return (_FILLED if f.required else _CELL).format(d=d)
