"""Streaming a response body to a file (or stdout), counting its records.

A file is written as ``PATH.part`` and renamed when the stream has ended, so an
interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx

from bulkport.client.http import CliError, ExitCode
from bulkport.client.rows import RowCounter

#: Bytes read from the socket at a time.
CHUNK_BYTES = 1 << 20
STDOUT = "-"


def format_for_path(path: str, choices: tuple[str, ...], default: str | None = None) -> str:
    """The format named by a path's extension (``out.csv.gz`` -> ``csv``)."""
    name = path.lower().removesuffix(".gz")
    for fmt in choices:
        if name.endswith("." + fmt) or (fmt == "ndjson" and name.endswith(".jsonl")):
            return fmt
    if default is not None:
        return default
    raise CliError(f"cannot tell the format of {path!r}: end it with "
                   + " or ".join("." + c for c in choices), ExitCode.USAGE)


def save(response: httpx.Response, path: str, counter: RowCounter, *, raw: bool = False,
         on_chunk: Callable[[int, int], None] | None = None) -> int:
    """Write the body of ``response`` to ``path`` (``-``: stdout); the bytes written.

    ``raw`` keeps the body as sent (a gzip stream stays compressed).
    """
    chunks = (response.iter_raw(CHUNK_BYTES) if raw else response.iter_bytes(CHUNK_BYTES))
    if path == STDOUT:
        return _copy(chunks, sys.stdout.buffer, counter, on_chunk)
    target = Path(path)
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as out:
            written = _copy(chunks, out, counter, on_chunk)
        os.replace(part, target)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return written


def _copy(chunks: Iterator[bytes], out: BinaryIO, counter: RowCounter,
          on_chunk: Callable[[int, int], None] | None) -> int:
    written = 0
    for chunk in chunks:
        out.write(chunk)
        counter.feed(chunk)
        written += len(chunk)
        if on_chunk is not None:
            on_chunk(counter.rows, written)
    out.flush()
    return written
