"""Rate limiting of ``/v1`` per API key (per client address when keys are not in use).

A token bucket per caller: ``BULKPORT_RATE_LIMIT_PER_MINUTE`` tokens a minute,
up to ``BULKPORT_RATE_LIMIT_BURST`` saved up. A request without a token gets
**429** ``rate_limited`` with ``Retry-After`` (whole seconds until a token is back).

The buckets are shared by every instance on the database
(:mod:`bulkport.api.shared_limit`): a process leases tokens from them in small
blocks and spends those locally, so the limit holds across instances within a
documented bound, and a request costs a round trip only once per block. While
PostgreSQL is unreachable each process falls back to a bucket of its own
(:class:`TokenBuckets`). With the limit at 0 nothing here runs at all.

Callers presenting a wrong key are counted by address, so guessing keys is
limited too. Behind a reverse proxy the address is the one uvicorn trusts from
``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from bulkport.api.errors import error_response
from bulkport.api.security import ApiKeys, bearer_token
from bulkport.api.shared_limit import SharedBuckets
from bulkport.config import Settings

#: Buckets kept before idle (full) ones are dropped; bounds memory under many addresses.
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by caller in this process; ``take`` returns 0 or the seconds to wait."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(burst)
        self.buckets: dict[str, _Bucket] = {}

    def take(self, caller: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(caller)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self.buckets[caller] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (a full bucket is the same as none)."""
        full = [c for c, b in self.buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.capacity]
        for caller in full:
            del self.buckets[caller]
        while len(self.buckets) >= MAX_BUCKETS:  # all busy: drop the oldest
            del self.buckets[next(iter(self.buckets))]


def rate_limit_buckets(settings: Settings) -> SharedBuckets | None:
    """The buckets of one app (``None``: no limit). One object, given to each middleware
    chain of the app (bulkport.api.app.middlewares), so that a caller has one bucket."""
    per_minute = settings.rate_limit_per_minute
    if not per_minute:
        return None
    burst = settings.rate_limit_burst or max(1, per_minute // 10)
    return SharedBuckets(per_minute, burst, TokenBuckets(per_minute, burst))


class RateLimitMiddleware:
    """Answers 429 with ``Retry-After`` when a caller runs out of tokens."""

    def __init__(self, app: ASGIApp, settings: Settings, buckets: SharedBuckets | None) -> None:
        self.app = app
        self.per_minute = settings.rate_limit_per_minute
        self.buckets = buckets  # None: no limit (rate_limit_buckets)
        self.keys = ApiKeys(settings.api_keys)

    def caller(self, scope: Scope) -> str:
        token = bearer_token(scope) if self.keys.enabled else None
        kid = self.keys.identify(token) if token else None
        if kid is not None:
            return f"key:{kid}"
        client = scope.get("client")
        return f"addr:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (self.buckets is None or scope["type"] != "http"
                or not (path == "/v1" or path.startswith("/v1/"))):
            await self.app(scope, receive, send)
            return
        # The app's state is set up by its lifespan, after the middleware was built.
        wait = await self.buckets.take(self.caller(scope), scope["app"].state.bulkport.pool)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            response = error_response(
                429, "rate_limited",
                f"too many requests: the limit is {self.per_minute} per minute; "
                f"retry after {retry_after} s",
                {"limit_per_minute": self.per_minute, "retry_after_seconds": retry_after},
                headers={"Retry-After": str(retry_after)})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
