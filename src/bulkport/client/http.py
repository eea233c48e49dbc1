"""The connection to a running server, and how its answers become exit codes.

Every client command talks to the public HTTP API (``/v1``) only. Anything that
goes wrong (the server cannot be reached, the key is refused, a 4xx or 5xx)
becomes a :class:`CliError` carrying a one-line message and the exit code of
the table in docs/cli.md; :func:`bulkport.client.commands.run` prints it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import httpx
import orjson

DEFAULT_URL = "http://127.0.0.1:8000"
#: Connecting must be quick; a read may wait for a large upload to be stored, or a
#: slow export to produce its next chunk.
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=600.0, pool=10.0)


class ExitCode(IntEnum):
    """Exit codes of the client commands (docs/cli.md)."""

    OK = 0
    FAILED = 1  # job failed or cancelled, server error, server unreachable, not found
    USAGE = 2  # bad arguments, or the server refused the request as invalid (400/413/422)
    REJECTED = 3  # the job completed with rejected records
    AUTH = 4  # the API key is missing or refused (401/403)
    TIMEOUT = 5  # --wait gave up before the job ended
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure reported as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED,
                 body: dict[str, Any] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: The HTTP status that caused it, if any.
        self.status = status
        #: The server's error document, when there was one (printed by ``--json``).
        self.body = body


def exit_code_for(status: int) -> ExitCode:
    if status in (401, 403):
        return ExitCode.AUTH
    if status in (400, 413, 422):
        return ExitCode.USAGE
    return ExitCode.FAILED


@dataclass
class Connection:
    """Where the server is and which key to send."""

    url: str
    api_key: str | None

    @classmethod
    def from_args(cls, url: str | None, api_key: str | None) -> Connection:
        base = (url or os.environ.get("BULKPORT_URL") or DEFAULT_URL).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise CliError(f"--url must start with http:// or https://, not {base!r}",
                           ExitCode.USAGE)
        return cls(base, api_key or os.environ.get("BULKPORT_API_KEY") or None)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def absolute(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.url + path

    @contextmanager
    def client(self) -> Iterator[httpx.Client]:
        """An HTTP client on the server; transport failures become a :class:`CliError`."""
        try:
            # Loading the CA bundle costs ~0.1 s of start-up; a plain-HTTP server never
            # needs it, and redirects are not followed (the API does not redirect), so no
            # request of this client can reach a TLS server unverified.
            with httpx.Client(base_url=self.url, headers=self.headers(), timeout=TIMEOUT,
                              verify=self.url.startswith("https://"),
                              follow_redirects=False) as client:
                yield client
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the bulkport server at {self.url} ({_reason(exc)}); "
                           "is `bulkport serve` running? Set --url or BULKPORT_URL") from None
        except httpx.TimeoutException:
            raise CliError(f"the server at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"connection to {self.url} failed: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    # "[Errno 111] Connection refused" -> "Connection refused"
    return text.split("] ", 1)[-1].splitlines()[0]


def check(response: httpx.Response) -> httpx.Response:
    """``response`` when it is a success; else a :class:`CliError` with the server's message."""
    if response.is_success:
        return response
    if not response.is_closed:
        response.read()
    body: dict[str, Any] | None = None
    try:
        parsed = orjson.loads(response.content)
        body = parsed if isinstance(parsed, dict) else None
    except orjson.JSONDecodeError:
        pass
    if body and isinstance(body.get("message"), str):
        message = body["message"]
    else:  # not bulkport's error shape (a proxy page, say): its first line
        text = response.text.strip().splitlines()
        message = text[0][:200] if text else response.reason_phrase
    code = body.get("error") if body else None
    label = f"{response.status_code} {code}" if code else str(response.status_code)
    raise CliError(f"{message} ({label})", exit_code_for(response.status_code), body,
                   response.status_code)


def get_json(client: httpx.Client, path: str, **params: Any) -> Any:
    return orjson.loads(check(client.get(path, params=params or None)).content)
