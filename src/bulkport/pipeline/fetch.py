"""Download of a remote ``file_url`` into storage, safely.

* Only absolute ``http``/``https`` URLs.
* No requests to loopback, private, link-local (cloud metadata at
  169.254.169.254), CGNAT, multicast, reserved or unspecified addresses, nor to
  IPv6 addresses that carry such an IPv4 address (mapped, compatible, NAT64,
  6to4, Teredo): the host is resolved and **every** address it resolves to is
  checked before connecting, and the connection goes to the address that was
  checked (no second DNS lookup that could answer differently). Redirects are
  followed by hand, at most :data:`MAX_REDIRECTS`, each one checked the same way.
  ``BULKPORT_ALLOW_PRIVATE_URLS=true`` lifts the address check;
  ``BULKPORT_FETCH_ALLOW_LIST`` lifts it for named hosts or networks only.
* Proxy environment variables are ignored (the check must apply to the real peer).
* Credentials in the URL (``http://user:password@host/…``) are sent as HTTP Basic
  auth, to that origin only, and never shown: :func:`redact` replaces them with
  ``***`` in every message and log line.
* The worker's ``keep_going`` is polled while the file streams in: a cancelled
  job, a lost lease or a graceful stop ends the download (:class:`DownloadStopped`).
* The file streams into upload storage (DATA_DIR, or the bucket as a multipart
  upload: never whole in memory or on disk); a refusal of the bucket fails the job.
* Size: ``BULKPORT_MAX_UPLOAD_BYTES`` (refused early from ``Content-Length``,
  counted while streaming). Time: ``BULKPORT_FETCH_TIMEOUT_SECONDS`` to connect and
  between reads, ``BULKPORT_FETCH_MAX_SECONDS`` for the whole download.

:func:`check_url` runs when the job is created (a refused URL is a 400);
:func:`fetch` runs in the worker and turns every failure into
:class:`~bulkport.errors.FetchFailed`, a failed job with the reason.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from bulkport.config import Settings
from bulkport.errors import BadRequest, FetchFailed, PayloadTooLarge
from bulkport.storage import Storage, StorageError, StoredFile

if TYPE_CHECKING:
    import httpx

#: Redirects followed before giving up.
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
#: How often a download asks ``keep_going`` whether to go on (seconds).
CHECK_EVERY_SECONDS = 1.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv6 prefixes whose last 32 bits are an IPv4 address: IPv4-compatible (deprecated),
#: IPv4-translated (SIIT) and the well-known NAT64 prefix. (IPv4-mapped, 6to4 and
#: Teredo are decoded by :mod:`ipaddress`.)
_LAST_32_BITS_IPV4 = tuple(ipaddress.ip_network(n) for n in
                           ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
#: Local-use NAT64 (RFC 8215): not globally reachable, and where it carries the IPv4
#: address depends on a prefix length only the local network knows, so it is refused.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
#: The userinfo of a URL: everything of the authority before its last "@".
_USERINFO = re.compile(r"^([^:/?#]*:)?(/*)[^/?#]*@")


class DownloadStopped(Exception):
    """The download was asked to stop (cancelled job, lost lease, shutdown)."""


class UrlNotAllowed(BadRequest):
    """The file_url may not be fetched."""

    code = "url_not_allowed"


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    host: str
    address: str


def redact(url: str) -> str:
    """``url`` with its user name and password (if any) replaced by ``***``."""
    return _USERINFO.sub(r"\1\2***@", url, count=1)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client: the last 32 bits inverted
    if any(ip in net for net in _LAST_32_BITS_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def _forbidden(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return True
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            if _forbidden(v4):
                return True
            if ip.ipv4_mapped is not None:  # the IPv4 address itself, written as IPv6
                return False
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
    _parse_as_download(url)
    return url


def _parse(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"file_url is not a valid URL ({exc}); give an absolute http:// or "
                         "https:// URL", file_url=redact(url)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("file_url must be an absolute http:// or https:// URL",
                         file_url=redact(url))
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _parse_as_download(url: str) -> None:
    """Refuse what the download would not parse although urllib does ("[::1]x")."""
    import httpx  # here, not at the top: the API process loads it on its first file_url

    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BadRequest(f"file_url is not a valid URL ({exc}); give an absolute http:// or "
                         "https:// URL", file_url=redact(url)) from None


def resolve_target(url: str, settings: Settings) -> Target:
    """Check ``url`` and pick the address to connect to; :class:`UrlNotAllowed` if refused."""
    host, port = _parse(url)
    addresses = _resolve(host, port)
    if not addresses:
        raise UrlNotAllowed(f"the host of file_url ({host}) has no address", host=host)
    if not settings.allow_private_urls:
        for ip in addresses:
            if _forbidden(ip) and not _allowed_by_list(host, ip, settings):
                v4 = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
                raise UrlNotAllowed(
                    f"file_url host {host} resolves to {ip}"
                    f"{f' (which carries {v4})' if v4 is not None else ''}, a loopback, "
                    "private, link-local or otherwise non-public address; bulkport does not "
                    "fetch from those (allow it with BULKPORT_FETCH_ALLOW_LIST or "
                    "BULKPORT_ALLOW_PRIVATE_URLS)", host=host, address=str(ip))
    _parse_as_download(url)
    return Target(url, host, str(addresses[0]))


def fetch(url: str, storage: Storage, settings: Settings,
          keep_going: Callable[[], bool] = lambda: True,
          check_every_seconds: float = CHECK_EVERY_SECONDS,
          head_bytes: int | None = None) -> StoredFile:
    """Stream ``url`` into storage; failures become :class:`FetchFailed` (a failed job).

    With ``head_bytes``, only the file's first bytes are downloaded and stored (the
    preview reads only the beginning of a file).

    ``keep_going`` is asked about every ``check_every_seconds`` while data
    arrives; when it says no, the connection is closed, nothing is kept and
    :class:`DownloadStopped` is raised.
    """
    import httpx

    deadline = time.monotonic() + settings.fetch_max_seconds
    timeout = httpx.Timeout(settings.fetch_timeout_seconds)
    try:
        auth = _Credentials(url)
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,
                          event_hooks={"response": [_check_redirect]}) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target = resolve_target(url, settings)
                with _get(client, target, auth.for_url(url)) as resp:
                    location = resp.headers.get("location")
                    if resp.status_code in _REDIRECTS and location:
                        url = _redirect(url, location)
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(f"downloading {redact(url)} answered HTTP "
                                          f"{resp.status_code}")
                    length = resp.headers.get("content-length", "")
                    if (head_bytes is None and length.isdigit()
                            and int(length) > settings.max_upload_bytes):
                        raise PayloadTooLarge(
                            f"it announces {length} bytes, more than the limit of "
                            f"{settings.max_upload_bytes} bytes")
                    chunks = _until(resp.iter_bytes(), deadline, settings, keep_going,
                                    check_every_seconds)
                    if head_bytes is not None:
                        chunks = _head(chunks, head_bytes)
                    return storage.save(chunks, max_bytes=settings.max_upload_bytes)
            raise FetchFailed(f"downloading file_url gave up after {MAX_REDIRECTS} redirects")
    except _BadRedirect as exc:
        raise FetchFailed(f"downloading {redact(url)} failed: {exc}") from None
    except UrlNotAllowed as exc:
        raise FetchFailed(f"refused to download {redact(url)}: {exc.message}") from None
    except BadRequest as exc:  # a stored URL that the rules of this version refuse
        raise FetchFailed(f"refused to download {redact(url)}: {exc.message}") from None
    except PayloadTooLarge as exc:
        raise FetchFailed(f"the remote file is too large: {exc.message}") from None
    except StorageError as exc:  # the bucket refused the file: say so, not "internal error"
        raise FetchFailed(f"storing the download of {redact(url)} failed: {exc.message}"
                          ) from None
    except httpx.ConnectTimeout:
        raise FetchFailed(f"downloading {redact(url)} failed: could not connect within "
                          f"{settings.fetch_timeout_seconds:g} s "
                          "(BULKPORT_FETCH_TIMEOUT_SECONDS)") from None
    except httpx.TimeoutException:
        raise FetchFailed(f"downloading {redact(url)} failed: the server sent nothing for "
                          f"{settings.fetch_timeout_seconds:g} s "
                          "(BULKPORT_FETCH_TIMEOUT_SECONDS)") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise FetchFailed(f"downloading {redact(url)} failed: {type(exc).__name__}: {exc}"
                          ) from None


def _head(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """The first ``limit`` bytes of ``chunks``; the rest is not read."""
    for chunk in chunks:
        if len(chunk) >= limit:
            yield chunk[:limit]
            return
        limit -= len(chunk)
        yield chunk


class _BadRedirect(Exception):
    """A redirect bulkport does not follow (the message says why)."""


def _redirect(url: str, location: str) -> str:
    """The URL a redirect points at; only http(s) URLs that parse are followed."""
    import httpx

    try:
        target = urljoin(url, location)
        parts = urlsplit(target)
        _ = parts.port  # raises ValueError when out of range
        httpx.URL(target)
    except (ValueError, httpx.InvalidURL) as exc:
        raise _BadRedirect(f"redirect to an invalid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise _BadRedirect(f"redirect to a {parts.scheme}:// URL is not allowed: "
                           "only http and https")
    return target


def _check_redirect(response: httpx.Response) -> None:
    """Response hook: judge a Location before httpx parses it (its errors are cryptic)."""
    location = response.headers.get("location")
    if response.status_code in _REDIRECTS and location:
        _redirect(str(response.request.url), location)


class _Credentials:
    """The user name and password of the URL a download started from.

    They go to that origin (scheme, host, port) only: a redirect elsewhere gets
    none, unless its own URL carries some.
    """

    def __init__(self, url: str) -> None:
        _parse(url)
        self.origin = _origin(url)
        self.auth = _basic_auth(url)

    def for_url(self, url: str) -> httpx.BasicAuth | None:
        return _basic_auth(url) or (self.auth if _origin(url) == self.origin else None)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _basic_auth(url: str) -> httpx.BasicAuth | None:
    import httpx

    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return None
    return httpx.BasicAuth(parsed.username, parsed.password)


@contextmanager
def _get(client: httpx.Client, target: Target,
         auth: httpx.BasicAuth | None) -> Iterator[httpx.Response]:
    """GET ``target.url`` from the checked address (Host and TLS name unchanged).

    The credentials go in ``auth``, not in the URL, so that httpx's own log line
    of the request does not show them.
    """
    import httpx

    url = httpx.URL(target.url).copy_with(username=None, password=None)
    extensions = {"sni_hostname": target.host} if url.scheme == "https" else {}
    request = client.build_request("GET", url.copy_with(host=target.address),
                                   headers={"Host": url.netloc.decode("ascii")},
                                   extensions=extensions)
    response = client.send(request, auth=auth, stream=True)
    try:
        yield response
    finally:
        response.close()


def _until(chunks: Iterator[bytes], deadline: float, settings: Settings,
           keep_going: Callable[[], bool], check_every_seconds: float) -> Iterator[bytes]:
    next_check = time.monotonic() + check_every_seconds
    for chunk in chunks:
        now = time.monotonic()
        if now > deadline:
            raise FetchFailed(f"the download took longer than {settings.fetch_max_seconds:g} s "
                              "(BULKPORT_FETCH_MAX_SECONDS)")
        if now >= next_check:
            if not keep_going():
                raise DownloadStopped()
            next_check = time.monotonic() + check_every_seconds
        yield chunk
