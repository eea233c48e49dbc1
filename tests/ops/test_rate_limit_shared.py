"""The shared rate-limit buckets against the real database: the lease arithmetic, concurrent
leases, the sweep, the refusal a process remembers, and failing open when PostgreSQL is gone."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from bulkport import db
from bulkport.api.ratelimit import TokenBuckets
from bulkport.api.shared_limit import SharedBuckets, block_size, lease, sweep
from tests.conftest import free_port
from tests.ops.conftest import AppClient


def caller() -> str:
    return f"key:{uuid.uuid4().hex[:16]}"


def age(conn: psycopg.Connection[Any], who: str, seconds: float) -> None:
    """Move a bucket's last lease back in time, as if ``seconds`` had passed."""
    conn.execute("UPDATE rate_limit_buckets SET updated_at = updated_at - make_interval(secs => %s)"
                 " WHERE caller = %s", (seconds, who))


def row_count(conn: psycopg.Connection[Any], who: str) -> int:
    row = conn.execute("SELECT count(*) FROM rate_limit_buckets WHERE caller = %s",
                       (who,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def pool(pg_url: str) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
    with ConnectionPool(pg_url, min_size=1, max_size=4, kwargs={"autocommit": True}) as p:
        yield p


def test_block_is_a_tenth_of_the_burst() -> None:
    assert [block_size(b) for b in (1, 9, 10, 25, 600)] == [1, 1, 1, 2, 60]


def test_lease_takes_blocks_and_refills_at_the_rate(conn: psycopg.Connection[Any]) -> None:
    who = caller()  # 60 a minute: one token a second, burst 10, blocks of 4
    taken = [lease(conn, who, 4, 60, 10) for _ in range(4)]
    assert [t.granted for t in taken] == [4, 4, 2, 0]  # a new caller starts full
    assert [t.left for t in taken] == pytest.approx([6, 2, 0, 0], abs=0.2)
    age(conn, who, 2.5)  # 2.5 tokens came back: two whole ones are handed out
    again = lease(conn, who, 4, 60, 10)
    assert again.granted == 2 and again.left == pytest.approx(0.5, abs=0.2)
    age(conn, who, 3600)  # an hour refills the bucket to the burst, not beyond
    full = lease(conn, who, 4, 60, 10)
    assert full.granted == 4 and full.left == pytest.approx(6, abs=0.2)
    assert lease(conn, caller(), 4, 60, 10).granted == 4  # callers do not share a bucket


def test_concurrent_leases_never_hand_out_a_token_twice(pg_url: str) -> None:
    who = caller()  # one token a minute: no refill to speak of while this runs
    granted: list[int] = []
    start = threading.Barrier(8)

    def spend() -> None:
        with db.connect(pg_url, autocommit=True) as c:
            start.wait()
            for _ in range(6):
                granted.append(lease(c, who, 1, 1, 10).granted)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 48 and sum(granted) == 10


def test_sweep_forgets_only_buckets_that_have_refilled(conn: psycopg.Connection[Any]) -> None:
    idle, busy = caller(), caller()
    lease(conn, idle, 5, 60, 10)
    lease(conn, busy, 5, 60, 10)
    age(conn, idle, 11)  # an empty bucket of 10 at one a second is full after 10 s
    age(conn, busy, 5)
    assert sweep(conn, 60, 10) >= 1
    assert (row_count(conn, idle), row_count(conn, busy)) == (0, 1)


def test_a_refused_caller_costs_no_round_trip_until_a_token_is_due(
        conn: psycopg.Connection[Any], pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
    who = caller()
    buckets = SharedBuckets(6, 2, TokenBuckets(6, 2))  # a token every 10 s, burst 2

    async def takes(n: int) -> list[float]:
        return [await buckets.take(who, pool) for _ in range(n)]

    first = asyncio.run(takes(3))
    assert first[:2] == [0.0, 0.0] and 9 < first[2] <= 10
    # Were the process asking the database again, it would find a full bucket now.
    conn.execute("DELETE FROM rate_limit_buckets WHERE caller = %s", (who,))
    later = asyncio.run(takes(2))
    assert all(0 < w <= 10 for w in later)
    assert row_count(conn, who) == 0


def test_a_drained_bucket_is_asked_again_once_it_holds_a_block(
        conn: psycopg.Connection[Any], pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
    who = caller()
    buckets = SharedBuckets(60, 40, TokenBuckets(60, 40))  # a token a second, blocks of 4
    assert lease(conn, who, 40, 60, 40).granted == 40  # another instance drained it
    wait = asyncio.run(buckets.take(who, pool))
    assert 3 < wait <= 4  # four tokens away, not one: one round trip per block
    age(conn, who, 10)
    buckets.stocks[who].refused_until = 0.0  # the wait has passed
    assert asyncio.run(buckets.take(who, pool)) == 0.0
    row = conn.execute("SELECT granted FROM rate_limit_buckets WHERE caller = %s",
                       (who,)).fetchone()
    assert row is not None and row[0] == 4


def test_concurrent_requests_of_one_process_share_one_lease(
        conn: psycopg.Connection[Any], pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
    who = caller()
    buckets = SharedBuckets(60, 40, TokenBuckets(60, 40))  # blocks of 4

    async def burst() -> list[float]:
        return list(await asyncio.gather(*(buckets.take(who, pool) for _ in range(4))))

    assert asyncio.run(burst()) == [0.0] * 4
    row = conn.execute("SELECT tokens, granted FROM rate_limit_buckets WHERE caller = %s",
                       (who,)).fetchone()
    assert row is not None and row[1] == 4 and row[0] == pytest.approx(36, abs=0.2)


def test_unreachable_database_fails_open_to_a_per_process_bucket(
        pg_url: str, pool: ConnectionPool[psycopg.Connection[Any]],
        caplog: pytest.LogCaptureFixture) -> None:
    who = caller()
    buckets = SharedBuckets(6, 2, TokenBuckets(6, 2))
    nowhere = f"postgresql://bulkport@127.0.0.1:{free_port()}/bulkport?connect_timeout=1"
    with ConnectionPool(nowhere, min_size=0, max_size=1, open=True) as gone:

        async def takes(p: ConnectionPool[psycopg.Connection[Any]], n: int) -> list[float]:
            return [await buckets.take(who, p) for _ in range(n)]

        with caplog.at_level(logging.INFO, logger="bulkport.api.shared_limit"):
            down = asyncio.run(takes(gone, 4))
            assert down[:2] == [0.0, 0.0] and all(w > 0 for w in down[2:])  # still limited
            buckets.local_until = 0.0  # the retry period has passed
            asyncio.run(takes(gone, 1))
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                        and r.name == "bulkport.api.shared_limit"]
            assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
            buckets.local_until = 0.0
            assert asyncio.run(takes(pool, 1)) == [0.0]  # back on the shared bucket
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    with db.connect(pg_url, autocommit=True) as c:
        assert row_count(c, who) == 1


def test_a_process_sweeps_refilled_buckets_as_it_leases(
        conn: psycopg.Connection[Any], pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
    idle, who = caller(), caller()
    lease(conn, idle, 1, 60, 10)
    age(conn, idle, 60)
    buckets = SharedBuckets(60, 10, TokenBuckets(60, 10))
    assert asyncio.run(buckets.take(who, pool)) == 0.0  # the first lease also sweeps
    assert (row_count(conn, idle), row_count(conn, who)) == (0, 1)
    lease(conn, idle, 1, 60, 10)
    age(conn, idle, 60)
    buckets.stocks.clear()
    asyncio.run(buckets.take(who, pool))  # the next sweep is a minute away
    assert row_count(conn, idle) == 1


def test_a_process_keeps_a_bounded_number_of_stocks(
        monkeypatch: pytest.MonkeyPatch, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
    monkeypatch.setattr("bulkport.api.shared_limit.MAX_STOCKS", 3)
    buckets = SharedBuckets(60, 10, TokenBuckets(60, 10))

    async def many() -> None:
        for _ in range(7):
            assert await buckets.take(caller(), pool) == 0.0

    asyncio.run(many())
    assert len(buckets.stocks) <= 3


def test_limit_off_leaves_the_shared_buckets_alone(app_client: AppClient,
                                                   conn: psycopg.Connection[Any]) -> None:
    with app_client(rate_limit_per_minute=0) as client:
        assert all(client.get("/v1/imports").status_code == 200 for _ in range(5))
    assert conn.execute("SELECT count(*) FROM rate_limit_buckets").fetchone() == (0,)
    with app_client(rate_limit_per_minute=600) as client:  # and with it on, they are used
        assert client.get("/v1/imports").status_code == 200
    assert conn.execute("SELECT count(*) FROM rate_limit_buckets").fetchone() == (1,)
