"""``/metrics``: Prometheus exposition of every process, plus values read at scrape time.

Besides the metrics of :mod:`bulkport.metrics` (shared by the API and its worker
processes), a scrape reads:

* the API's connection pool — ``bulkport_db_pool_connections{state=in_use|idle}``,
  ``bulkport_db_pool_max_connections``, ``bulkport_db_pool_requests_waiting``;
* the job queue in PostgreSQL — ``bulkport_queue_jobs{type,resource,status}`` for
  pending/processing jobs, ``bulkport_queue_oldest_pending_seconds``,
  ``bulkport_queue_seconds_since_progress`` (the processing job that moved least
  recently), ``bulkport_queue_expired_leases`` (jobs whose worker stopped renewing),
  and ``bulkport_database_up``.

Queue values describe the whole database: with several instances, aggregate
them with ``max`` rather than ``sum``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from psycopg_pool import ConnectionPool
from starlette.responses import Response

from bulkport import metrics
from bulkport.api.state import AppState, get_state
from bulkport.jobs import service
from bulkport.resources import RESOURCES
from bulkport.status import JobKind, JobStatus

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])

#: A scrape waits at most this long for a connection to read the queue (seconds).
QUEUE_CONNECT_TIMEOUT_SECONDS = 1.0


class PoolCollector:
    """Connection usage of one psycopg pool."""

    def __init__(self, pool: ConnectionPool[Any], name: str) -> None:
        self.pool, self.name = pool, name

    def collect(self) -> Iterator[Metric]:
        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        conns = GaugeMetricFamily("bulkport_db_pool_connections",
                                  "Connections of the API's pool by state",
                                  labels=["pool", "state"])
        conns.add_metric([self.name, "in_use"], max(0, size - idle))
        conns.add_metric([self.name, "idle"], idle)
        yield conns
        yield _gauge("bulkport_db_pool_max_connections", "Size limit of the pool", self.name,
                     stats.get("pool_max", self.pool.max_size))
        yield _gauge("bulkport_db_pool_requests_waiting",
                     "Requests waiting for a connection of the pool", self.name,
                     stats.get("requests_waiting", 0))


def _gauge(name: str, doc: str, pool: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["pool"])
    family.add_metric([pool], value)
    return family


class QueueCollector:
    """Unfinished jobs in PostgreSQL, read with one indexed query per scrape."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bulkport_database_up",
                               "1 when the job queue could be read at this scrape")
        try:
            with self.pool.connection(timeout=QUEUE_CONNECT_TIMEOUT_SECONDS) as conn:
                rows = service.queue_stats(conn)
        except Exception as exc:  # a scrape never fails because of the database
            log.warning("reading the job queue for /metrics failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _queue_families(rows)


def _queue_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    kinds = [str(k) for k in JobKind]
    counts: dict[tuple[str, str, str], float] = {
        (k, r, s): 0 for k in kinds for r in RESOURCES
        for s in (JobStatus.PENDING.value, JobStatus.PROCESSING.value)}
    oldest: dict[str, float] = defaultdict(float)
    idle: dict[str, float] = defaultdict(float)
    expired: dict[str, float] = defaultdict(float)
    for row in rows:
        kind, status = row["type"], row["status"]
        counts[(kind, row["resource"], status)] = row["jobs"]
        if status == JobStatus.PENDING:
            oldest[kind] = max(oldest[kind], row["oldest_seconds"] or 0.0)
        else:
            idle[kind] = max(idle[kind], row["idle_seconds"] or 0.0)
            expired[kind] += row["expired_leases"]
    jobs = GaugeMetricFamily("bulkport_queue_jobs", "Pending and processing jobs in the database",
                             labels=["type", "resource", "status"])
    for labels, value in counts.items():
        jobs.add_metric(list(labels), value)
    yield jobs
    for name, doc, values in (
        ("bulkport_queue_oldest_pending_seconds", "Age of the oldest pending job", oldest),
        ("bulkport_queue_seconds_since_progress",
         "Seconds since the least recently updated processing job made progress", idle),
        ("bulkport_queue_expired_leases",
         "Processing jobs whose worker stopped renewing the lease", expired),
    ):
        family = GaugeMetricFamily(name, doc, labels=["type"])
        for kind in kinds:
            family.add_metric([kind], values.get(kind, 0.0))
        yield family


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus_metrics(state: Annotated[AppState, Depends(get_state)]) -> Response:
    body = metrics.exposition(PoolCollector(state.pool, "api"), QueueCollector(state.pool))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
