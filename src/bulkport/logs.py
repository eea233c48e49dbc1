"""Logging set-up: JSON lines on stdout, or a readable format on a terminal.

Context fields: :func:`log_context` binds fields (``request_id``, ``job_id``…)
to every line logged inside it, in this thread and in the threads and tasks
started from its context (``contextvars``). The HTTP layer binds the
request's id; the worker binds the job's id and the id of the request that
created the job, so a job's lines can be joined to the request that started it.

Extra fields passed with ``log.info(..., extra={...})`` become JSON keys too.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import orjson

# Record attributes that are not fields; ``color_message`` is uvicorn's ANSI copy of the message.
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "bulkport_log_context", default=MappingProxyType({}))


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (``None`` values are left out)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items()
                                              if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound context fields onto each record (explicit extras win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items()
            if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``time level logger: message key=value…`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head}  {fields}{sep}{tail}"


def setup_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Log to stdout: ``fmt`` is ``json``, ``console`` or ``auto`` (console on a TTY)."""
    handler = logging.StreamHandler(sys.stdout)
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    handler.setFormatter(ConsoleFormatter() if console else JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
