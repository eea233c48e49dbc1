"""Download of a remote ``file_url`` into storage, safely.

* Only absolute ``http``/``https`` URLs.
* No requests to loopback, private, link-local (cloud metadata at
  169.254.169.254), CGNAT, multicast, reserved or unspecified addresses: the host
  is resolved and **every** address it resolves to is checked before connecting,
  and the connection goes to the address that was checked (no second DNS lookup
  that could answer differently). Redirects are followed by hand, at most
  :data:`MAX_REDIRECTS`, each one checked the same way.
  ``BULKPORT_ALLOW_PRIVATE_URLS=true`` lifts the address check;
  ``BULKPORT_FETCH_ALLOW_LIST`` lifts it for named hosts or networks only.
* Proxy environment variables are ignored (the check must apply to the real peer).
* Size: ``BULKPORT_MAX_UPLOAD_BYTES`` (refused early from ``Content-Length``,
  counted while streaming). Time: ``BULKPORT_FETCH_TIMEOUT_SECONDS`` to connect and
  between reads, ``BULKPORT_FETCH_MAX_SECONDS`` for the whole download.

:func:`check_url` runs when the job is created (a refused URL is a 400);
:func:`fetch` runs in the worker and turns every failure into
:class:`~bulkport.errors.FetchFailed`, a failed job with the reason.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from bulkport.config import Settings
from bulkport.errors import BadRequest, FetchFailed, PayloadTooLarge
from bulkport.storage import LocalStorage, StoredFile

#: Redirects followed before giving up.
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlNotAllowed(BadRequest):
    """The file_url may not be fetched."""

    code = "url_not_allowed"


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    host: str
    address: str


def _forbidden(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _allowed_by_list(host: str, ip: IPAddress, settings: Settings) -> bool:
    for entry in settings.fetch_allow_list:
        if entry.lower() == host.lower():
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # ValueError: NUL in the name
        raise UrlNotAllowed(f"the host of file_url ({host}) could not be resolved: {exc}",
                            host=host) from None
    # Drop an IPv6 zone ("fe80::1%eth0"): it only ever names a link-local address.
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))


def check_url(url: str, settings: Settings | None = None) -> str:
    """Refuse anything but an absolute http(s) URL to an allowed address (400).

    Without ``settings`` only the form of the URL is checked.
    """
    if settings is not None:
        return resolve_target(url, settings).url
    _parse(url)
    return url


def _parse(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"file_url is not a valid URL ({exc}); give an absolute http:// or "
                         "https:// URL", file_url=url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("file_url must be an absolute http:// or https:// URL", file_url=url)
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve_target(url: str, settings: Settings) -> Target:
    """Check ``url`` and pick the address to connect to; :class:`UrlNotAllowed` if refused."""
    host, port = _parse(url)
    addresses = _resolve(host, port)
    if not addresses:
        raise UrlNotAllowed(f"the host of file_url ({host}) has no address", host=host)
    if not settings.allow_private_urls:
        for ip in addresses:
            if _forbidden(ip) and not _allowed_by_list(host, ip, settings):
                raise UrlNotAllowed(
                    f"file_url host {host} resolves to {ip}, a loopback, private, link-local "
                    "or otherwise non-public address; bulkport does not fetch from those "
                    "(allow it with BULKPORT_FETCH_ALLOW_LIST or BULKPORT_ALLOW_PRIVATE_URLS)",
                    host=host, address=str(ip))
    return Target(url, host, str(addresses[0]))


def fetch(url: str, storage: LocalStorage, settings: Settings) -> StoredFile:
    """Stream ``url`` into storage; failures become :class:`FetchFailed` (a failed job)."""
    deadline = time.monotonic() + settings.fetch_max_seconds
    timeout = httpx.Timeout(settings.fetch_timeout_seconds)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target = resolve_target(url, settings)
                with _get(client, target) as resp:
                    location = resp.headers.get("location")
                    if resp.status_code in _REDIRECTS and location:
                        url = urljoin(url, location)
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(f"downloading {url} answered HTTP {resp.status_code}")
                    length = resp.headers.get("content-length", "")
                    if length.isdigit() and int(length) > settings.max_upload_bytes:
                        raise PayloadTooLarge(
                            f"it announces {length} bytes, more than the limit of "
                            f"{settings.max_upload_bytes} bytes")
                    return storage.save(_until(resp.iter_bytes(), deadline, settings),
                                        max_bytes=settings.max_upload_bytes)
            raise FetchFailed(f"downloading file_url gave up after {MAX_REDIRECTS} redirects")
    except UrlNotAllowed as exc:
        raise FetchFailed(f"refused to download {url}: {exc.message}") from None
    except PayloadTooLarge as exc:
        raise FetchFailed(f"the remote file is too large: {exc.message}") from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"downloading {url} failed: {type(exc).__name__}: {exc}") from None


@contextmanager
def _get(client: httpx.Client, target: Target) -> Iterator[httpx.Response]:
    """GET ``target.url`` from the checked address (Host and TLS name unchanged)."""
    url = httpx.URL(target.url)
    extensions = {"sni_hostname": target.host} if url.scheme == "https" else {}
    request = client.build_request("GET", url.copy_with(host=target.address),
                                   headers={"Host": url.netloc.decode("ascii")},
                                   extensions=extensions)
    response = client.send(request, stream=True)
    try:
        yield response
    finally:
        response.close()


def _until(chunks: Iterator[bytes], deadline: float, settings: Settings) -> Iterator[bytes]:
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise FetchFailed(f"the download took longer than {settings.fetch_max_seconds:g} s "
                              "(BULKPORT_FETCH_MAX_SECONDS)")
        yield chunk
