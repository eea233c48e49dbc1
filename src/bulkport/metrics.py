"""Every Prometheus metric of bulkport (prefix ``bulkport_``), and the hooks that move them.

Metrics written by any process (the API and the worker processes) are defined
here. In ``bulkport serve`` they are shared through ``PROMETHEUS_MULTIPROC_DIR``
(see :mod:`bulkport.multiprocess`), so work done in worker processes appears on
the server's ``/metrics``. Gauges declare how the values of several processes
combine (``livesum``: summed over live processes; ``livemax``: the largest).

Values read from the outside world at scrape time (connection pool, job queue)
are not stored: :mod:`bulkport.api.metrics` collects them when ``/metrics`` is
read and passes them to :func:`exposition`.

Hooks, one call each at the place where the thing happens:

* HTTP: :mod:`bulkport.api.observe` (requests, latency).
* Jobs: the worker wraps a run in :func:`track_job` and reports the end with
  :func:`job_finished` (via :mod:`bulkport.jobs.report`).
* Batches: a pipeline creates a :class:`JobMeter` per run, calls
  :meth:`JobMeter.start` before a batch and :meth:`JobMeter.done` after its commit.
  A job that writes its records in one go (an export) calls :func:`count_records`.
* Streaming exports: the code that sends a streaming export runs inside
  ``with metrics.export_stream(resource, fmt):`` so that
  ``bulkport_export_streams_in_flight`` counts it while it is being sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.registry import Collector

from bulkport import multiprocess

# ``*_created`` series (one timestamp per labelled child) double the series count for no
# operational use, and multiprocess mode does not produce them: same output either way.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Latency buckets of HTTP requests (seconds): API calls are fast, downloads are long.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0)
#: Batch commit buckets (seconds): a 10,000-record batch takes ~0.1-1 s.
BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Whole-job buckets (seconds): from a small file to a multi-hour load.
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
               21600.0)

HTTP_REQUESTS = Counter(
    "bulkport_http_requests_total", "HTTP requests by method, route template and status",
    ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "bulkport_http_request_duration_seconds",
    "Time from the request to the last byte of the response (seconds)",
    ["method", "route"], buckets=HTTP_BUCKETS)

JOBS = Counter(
    "bulkport_jobs_total", "Jobs that reached a final status, by type, resource and status",
    ["type", "resource", "status"])
JOBS_IN_PROGRESS = Gauge(
    "bulkport_jobs_in_progress", "Jobs a worker is running now",
    ["type", "resource"], multiprocess_mode="livesum")
JOB_DURATION = Histogram(
    "bulkport_job_duration_seconds", "From a job's first start to its final status (seconds)",
    ["type", "resource", "status"], buckets=JOB_BUCKETS)
RECORDS = Counter(
    "bulkport_records_processed_total",
    "Records processed by type, resource and result (ok, rejected)",
    ["type", "resource", "result"])
BATCH_DURATION = Histogram(
    "bulkport_batch_duration_seconds", "Time to load and commit one batch (seconds)",
    ["type", "resource"], buckets=BATCH_BUCKETS)
JOB_ROWS_PER_SECOND = Gauge(
    "bulkport_job_rows_per_second",
    "Records per second of the running jobs, updated per batch (sum; 0 when idle)",
    ["type", "resource"], multiprocess_mode="livesum")
JOB_ERROR_RATE = Gauge(
    "bulkport_job_error_rate",
    "Rejected / processed records of the running jobs (the highest among them; 0 when idle)",
    ["type", "resource"], multiprocess_mode="livemax")
EXPORT_STREAMS = Gauge(
    "bulkport_export_streams_in_flight", "Streaming exports being sent now",
    ["resource", "format"], multiprocess_mode="livesum")


# --- hooks ----------------------------------------------------------------------------------


def count_records(kind: str, resource: str, ok: int, rejected: int = 0) -> None:
    """Records written (``ok``) and refused (``rejected``) by a job of ``kind``."""
    RECORDS.labels(kind, resource, "ok").inc(ok)
    if rejected:
        RECORDS.labels(kind, resource, "rejected").inc(rejected)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


@contextmanager
def track_job(kind: str, resource: str) -> Iterator[None]:
    """Count a job as in progress while the block runs; zero its live gauges after."""
    JOBS_IN_PROGRESS.labels(kind, resource).inc()
    try:
        yield
    finally:
        JOBS_IN_PROGRESS.labels(kind, resource).dec()
        JOB_ROWS_PER_SECOND.labels(kind, resource).set(0)
        JOB_ERROR_RATE.labels(kind, resource).set(0)


def job_finished(kind: str, resource: str, status: str, seconds: float | None) -> None:
    JOBS.labels(kind, resource, status).inc()
    if seconds is not None:
        JOB_DURATION.labels(kind, resource, status).observe(seconds)


class JobMeter:
    """Batch metrics of one run of one job, and its live rows/s and error rate.

    ``processed``/``rejected`` start from the job's committed counters, so the
    error rate of a resumed job covers the whole file; rows/s covers this run.
    """

    def __init__(self, kind: str, resource: str, processed: int = 0, rejected: int = 0) -> None:
        self.kind, self.resource = kind, resource
        self.processed, self.rejected = processed, rejected
        self.run_rows = 0
        self.run_started = time.perf_counter()
        self.batch_started: float | None = None
        self._ok = RECORDS.labels(kind, resource, "ok")
        self._rejected = RECORDS.labels(kind, resource, "rejected")
        self._batch = BATCH_DURATION.labels(kind, resource)
        self._rate = JOB_ROWS_PER_SECOND.labels(kind, resource)
        self._errors = JOB_ERROR_RATE.labels(kind, resource)

    @classmethod
    def for_job(cls, kind: str, job: Mapping[str, Any]) -> JobMeter:
        """A meter continuing from the committed counters of a job row."""
        return cls(kind, job["resource"], int(job.get("processed_records") or 0),
                   int(job.get("error_records") or 0))

    def start(self) -> None:
        """A batch begins (its load and commit are timed from here)."""
        self.batch_started = time.perf_counter()

    def done(self, size: int, rejected: int = 0) -> None:
        """A batch of ``size`` records committed, ``rejected`` of them refused."""
        now = time.perf_counter()
        if self.batch_started is not None:
            self._batch.observe(now - self.batch_started)
            self.batch_started = None
        self._ok.inc(size - rejected)
        self._rejected.inc(rejected)
        self.run_rows += size
        self.processed += size
        self.rejected += rejected
        elapsed = now - self.run_started
        if elapsed > 0:
            self._rate.set(self.run_rows / elapsed)
        self._errors.set(self.rejected / self.processed if self.processed else 0.0)


@contextmanager
def export_stream(resource: str, fmt: str) -> Iterator[None]:
    """Count a streaming export as in flight while the block runs."""
    gauge = EXPORT_STREAMS.labels(resource, fmt)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


# --- exposition -----------------------------------------------------------------------------


def _registry() -> CollectorRegistry:
    if not multiprocess.enabled():
        return REGISTRY
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def exposition(*collectors: Collector) -> bytes:
    """The text exposition of every process's metrics plus ``collectors`` (read now)."""
    extra = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        extra.register(collector)
    return generate_latest(_registry()) + generate_latest(extra)


def process_dead(pid: int | None) -> None:
    """Drop the live gauges of a worker process that exited."""
    if pid is not None and multiprocess.enabled():
        prom_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve_worker_metrics(host: str, port: int) -> None:
    """Serve ``/metrics`` of a ``bulkport worker`` host (its processes) on ``port``."""
    start_http_server(port, host, registry=_registry())
