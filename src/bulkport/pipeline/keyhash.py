"""Stable hashes of records' ids and natural keys, for the plan of a split import.

The plan pass (:mod:`bulkport.pipeline.split`) hashes every record's id and key
from the raw file; a chunk (:mod:`bulkport.pipeline.chunked`) hashes its valid
records' from their COPY text. Both normalise the value the same coarse way
(:func:`_norm`: stripped, lower-cased), coarser than the stage's comparison, so
that two values the stage finds equal always hash alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from zlib import crc32

from bulkport.resources.base import Resource
from bulkport.resources.compile import copy_unescape

#: What ``str.strip()`` removes from ASCII text (``bytes.strip()`` keeps \x1c-\x1f).
ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
#: A composite key's normalised parts are joined with this (no value holds it).
KEY_SEP = b"\x1f"


def stable_hash(value: bytes) -> int:
    """The hash of a normalised id or key, the same in every process (``hash`` is not).

    CRC-32: one C call, mapped over a chunk's distinct values at once. Ids and keys
    share the space, and a collision only makes a value hot (a record held for the
    tail), never a wrong result: about N²/2³³ extra hot values for N distinct values.
    """
    return crc32(value)


def norm_cell(cell: bytes) -> bytes:
    """:func:`_norm` of a CSV cell, on its bytes (the UTF-8 of the normalised text)."""
    if cell.isascii():
        return cell.strip(ASCII_SPACE).lower()
    return cell.decode("utf-8", "surrogateescape").strip().lower().encode(
        "utf-8", "surrogateescape")


def _norm(value: Any) -> bytes:
    """A value coarser than the validator's: stripped and lower-cased (b"" for none).

    Two values the stage compares as equal (an id as given; a key stripped,
    COPY-unescaped and lower-cased when case-insensitive) are equal here too, so
    the hash of a record's value is found whatever the validator makes of it.
    """
    if value is None or isinstance(value, bool | dict | list):
        return b""
    text = value if value.__class__ is str else str(value)
    return text.strip().lower().encode("utf-8", "surrogateescape")


class KeyHasher:
    """A record's id and natural key, normalised (:func:`_norm`), from the raw record or
    a valid one; and their hashes."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.key_fields = resource.natural_key
        names = resource.column_names
        self._key_index = [names.index(n) for n in resource.natural_key]

    def values(self, get: Callable[[str], Any]) -> tuple[bytes, bytes]:
        """``(id, key)`` of the raw values ``get(field)`` gives (b"": none)."""
        key = b""
        if self.key_fields:
            parts = [_norm(get(n)) for n in self.key_fields]
            key = KEY_SEP.join(parts) if all(parts) else b""
        return _norm(get("id")), key

    def hashes(self, get: Callable[[str], Any]) -> list[int]:
        """Hashes of the id and key that ``get(field)`` gives (raw values)."""
        return [stable_hash(v) for v in self.values(get) if v]

    def valid_hashes(self, values: Sequence[str | None]) -> list[int]:
        """The same hashes from a valid record's COPY text values (id None: generated)."""
        key = b""
        if self._key_index:
            parts = []
            for i in self._key_index:
                v = values[i]
                parts.append(_norm(copy_unescape(v) if v is not None and "\\" in v else v))
            key = KEY_SEP.join(parts) if all(parts) else b""
        rid = _norm(values[0])
        return [stable_hash(v) for v in (rid, key) if v]
