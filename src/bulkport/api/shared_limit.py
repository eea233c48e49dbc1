"""The rate limit's buckets shared by every instance: one per caller in PostgreSQL, spent in blocks.

The bucket of a caller is a row of ``rate_limit_buckets``. A server process does
not go to it for every request: it **leases** a block of up to :func:`block_size`
tokens (a tenth of the burst) with one statement (``lease_rate_tokens``), spends
them locally, and leases again when they are gone. So a request costs a round
trip only once per block, and none at all while the caller is refused: a lease
that finds the bucket drained (fewer whole tokens than a block) tells when it
holds a block again, and until then the process spends what it got and then
answers 429 by itself, with that time as ``Retry-After``.

The price is a bounded error (docs/operations.md, "Rate limits across
instances"): tokens leased but not yet spent sit in a process, at most a block
per process and caller, so N instances can serve at most ``N * block`` requests
more than one bucket would in any period, and a caller moving to another
instance can be refused while up to ``(N - 1) * block`` of its tokens wait
elsewhere.

PostgreSQL unreachable (or no pooled connection within :data:`LEASE_WAIT_SECONDS`):
the limit **fails open to a per-process bucket**
(:class:`~bulkport.api.ratelimit.TokenBuckets`, the same rate and burst), logged
once as a warning when it happens and once when the database is back; the shared
buckets are tried again every :data:`RETRY_SHARED_SECONDS`. Refusing every
request because the limiter's store is down would turn a database blip into an
outage of the routes that do not need the database, and most ``/v1`` routes
answer 503 by themselves then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import psycopg
from psycopg_pool import ConnectionPool

from bulkport.sql import QUERIES

if TYPE_CHECKING:
    from bulkport.api.ratelimit import TokenBuckets

log = logging.getLogger(__name__)

#: A block is at most this fraction of the burst (the error bound is N blocks).
BLOCK_FRACTION = 10
#: Longest a request waits for a pooled connection to lease with (seconds). Short:
#: past it the request is served by the per-process bucket.
LEASE_WAIT_SECONDS = 1.0
#: After a failed lease, the per-process buckets answer alone this long (seconds).
RETRY_SHARED_SECONDS = 5.0
#: How often a process deletes the rows of buckets that have refilled (seconds).
SWEEP_SECONDS = 60.0
#: Callers whose stock a process keeps before idle ones are dropped (bounds memory).
MAX_STOCKS = 10_000


def block_size(burst: int) -> int:
    """Most tokens one lease takes: a tenth of the burst, at least one."""
    return max(1, burst // BLOCK_FRACTION)


@dataclass(frozen=True)
class Lease:
    granted: int  #: whole tokens handed out
    left: float  #: tokens left in the shared bucket after the lease


def lease(conn: psycopg.Connection[Any], caller: str, want: int, per_minute: int,
          burst: int) -> Lease:
    """Take up to ``want`` tokens from the caller's shared bucket (one statement)."""
    row = conn.execute(QUERIES["lease_rate_tokens"],
                       {"caller": caller, "want": want, "capacity": float(burst),
                        "rate": per_minute / 60.0}).fetchone()
    assert row is not None  # INSERT … ON CONFLICT DO UPDATE always returns its row
    return Lease(int(row[0]), float(row[1]))


def sweep(conn: psycopg.Connection[Any], per_minute: int, burst: int) -> int:
    """Delete the buckets that have refilled completely; return how many."""
    full_seconds = burst / (per_minute / 60.0)
    return conn.execute(QUERIES["sweep_rate_buckets"], {"full_seconds": full_seconds}).rowcount


@dataclass
class _Stock:
    """What one process holds of a caller's bucket."""

    tokens: int = 0  #: leased, not spent yet (at most one block)
    refused_until: float = 0.0  #: monotonic time the shared bucket has a token again
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  #: one lease at a time


class SharedBuckets:
    """Buckets of all instances; ``await take(caller, pool)`` returns 0 or the seconds to wait."""

    def __init__(self, per_minute: int, burst: int, fallback: TokenBuckets) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.rate = per_minute / 60.0
        self.block = block_size(burst)
        self.stocks: dict[str, _Stock] = {}
        self.local = fallback  # the per-process buckets, while PostgreSQL is unreachable
        self.local_until = 0.0  # monotonic time the shared buckets are tried again
        self.unreachable = False  # logged once per outage, not once per retry
        self.next_sweep = 0.0

    async def take(self, caller: str, pool: ConnectionPool[psycopg.Connection[Any]]) -> float:
        while True:
            now = time.monotonic()
            if now < self.local_until:
                return self.local.take(caller, now)
            stock = self.stocks.get(caller) or self._new_stock(caller)
            if stock.tokens > 0:  # the common case: no await, no round trip
                stock.tokens -= 1
                return 0.0
            if now < stock.refused_until:
                return stock.refused_until - now
            async with stock.lock:
                # Requests that waited for the lock find the stock the lease left.
                if stock.tokens == 0 and time.monotonic() >= max(stock.refused_until,
                                                                 self.local_until):
                    await self._lease(caller, stock, pool)
            # Again from the top: spend a leased token, or answer from what the lease said.

    async def _lease(self, caller: str, stock: _Stock,
                     pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        try:
            got = await anyio.to_thread.run_sync(self._lease_blocking, pool, caller)
        except psycopg.Error as exc:  # psycopg_pool.PoolTimeout is one too
            if not self.unreachable:
                self.unreachable = True
                log.warning("rate limit: the shared buckets in PostgreSQL are unreachable "
                            "(%s); each process limits callers by itself until they are back",
                            exc, extra={"event": "rate_limit_local"})
            self.local_until = time.monotonic() + RETRY_SHARED_SECONDS
            return
        if self.unreachable:
            self.unreachable = False
            log.info("rate limit: the shared buckets in PostgreSQL are reachable again",
                     extra={"event": "rate_limit_shared"})
        stock.tokens += got.granted
        if got.granted < self.block:
            # The bucket is drained: ask it again once it holds a whole block, so that a
            # caller at its limit costs a round trip per block, not one per token.
            stock.refused_until = time.monotonic() + (self.block - got.left) / self.rate

    def _lease_blocking(self, pool: ConnectionPool[psycopg.Connection[Any]],
                        caller: str) -> Lease:
        with pool.connection(timeout=LEASE_WAIT_SECONDS) as conn:
            got = lease(conn, caller, self.block, self.per_minute, self.burst)
            if time.monotonic() >= self.next_sweep:
                self.next_sweep = time.monotonic() + SWEEP_SECONDS
                sweep(conn, self.per_minute, self.burst)
        return got

    def _new_stock(self, caller: str) -> _Stock:
        if len(self.stocks) >= MAX_STOCKS:
            self._prune()
        stock = self.stocks[caller] = _Stock()
        return stock

    def _prune(self) -> None:
        """Forget idle stocks: empty ones first (nothing lost), then the oldest."""
        now = time.monotonic()
        idle = [c for c, s in self.stocks.items()
                if not s.lock.locked() and s.tokens == 0 and s.refused_until <= now]
        for caller in idle:
            del self.stocks[caller]
        for caller in list(self.stocks):
            if len(self.stocks) < MAX_STOCKS:
                break
            if not self.stocks[caller].lock.locked():
                del self.stocks[caller]  # its leased tokens are lost: fewer requests, not more
