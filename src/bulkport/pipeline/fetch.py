"""Download of a remote ``file_url`` into storage (http/https only, size and time limits)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from bulkport.config import Settings
from bulkport.errors import BadRequest, FetchFailed, PayloadTooLarge
from bulkport.storage import CHUNK_BYTES, LocalStorage, StoredFile


def check_url(url: str) -> str:
    """Refuse anything but an absolute http(s) URL (400)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("file_url must be an absolute http:// or https:// URL", file_url=url)
    return url


def fetch(url: str, storage: LocalStorage, settings: Settings) -> StoredFile:
    """Stream ``url`` into storage; failures become :class:`FetchFailed` (a failed job)."""
    check_url(url)
    timeout = httpx.Timeout(settings.fetch_timeout_seconds)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client, \
                client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise FetchFailed(f"downloading {url} answered HTTP {resp.status_code}")
            return storage.save(resp.iter_bytes(CHUNK_BYTES), max_bytes=settings.max_upload_bytes)
    except PayloadTooLarge as exc:
        raise FetchFailed(f"the remote file is too large: {exc.message}") from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"downloading {url} failed: {exc}") from None
