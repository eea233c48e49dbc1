"""The worker loop: claim a job, keep its lease alive, run it, stop gracefully.

No SQL and no import or export logic live here: job state goes through
:mod:`bulkport.jobs.service`, a job's run (its kind's pipeline and the outcome
it returns) through :mod:`bulkport.jobs.runtime`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from bulkport import db, interpreter, metrics
from bulkport.config import Settings, get_settings
from bulkport.errors import LeaseLost
from bulkport.jobs import service
from bulkport.jobs.chunk_store import ChunkClaim
from bulkport.jobs.report import job_log_context, report_finished
from bulkport.jobs.runtime import Resources, run_chunk, run_claimed
from bulkport.jobs.sweep import Sweeper
from bulkport.logs import log_context
from bulkport.records import Job
from bulkport.status import JobKind, JobStatus
from bulkport.storage import upload_storage

log = logging.getLogger(__name__)

#: A job claimed this many times without committing a batch is failed (a poison job).
MAX_ATTEMPTS = 10
#: Backoff after the database failed under us (seconds, doubled up to the cap).
BACKOFF_START_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0


class Busy:
    """How many workers of this process are running a job.

    A worker whose process already runs a job lets one poll interval pass before
    it claims, so that idle worker processes (other cores) take new jobs first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self.count += 1
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1


class Worker:
    """Runs one job at a time until asked to stop."""

    def __init__(self, settings: Settings, url: str, name: str | None = None,
                 stopping: threading.Event | None = None, busy: Busy | None = None,
                 sweeper: Sweeper | None = None) -> None:
        self.settings = settings
        self.url = url
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.upload_storage = upload_storage(settings)
        self.resources = Resources(settings, self.connect, self.upload_storage)
        self.stopping = stopping or threading.Event()
        self.busy = busy or Busy()
        self.sweeper = sweeper or Sweeper(settings)
        self._turn = 0

    def connect(self) -> psycopg.Connection[Any]:
        return db.connect(self.url, autocommit=True)

    def run_forever(self) -> None:
        backoff = BACKOFF_START_SECONDS
        log.info("worker %s started", self.name)
        while not self.stopping.is_set():
            try:
                worked = self.run_once()
                backoff = BACKOFF_START_SECONDS
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); retrying in %.1fs", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            if not worked:
                self.stopping.wait(self.settings.poll_interval_seconds)
        log.info("worker %s stopped", self.name)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        self.sweeper.maybe_sweep(self.connect)
        if self.busy.count and self.stopping.wait(self.settings.poll_interval_seconds):
            return False
        # Take turns at which kind is looked at first, so queued imports never starve
        # exports (or the reverse).
        kinds = list(JobKind)
        self._turn = (self._turn + 1) % len(kinds)
        lease = self.settings.lease_seconds
        with self.connect() as conn:
            # Chunks of split imports first: the jobs already running finish sooner.
            chunk = service.claim_chunk(conn, self.name, lease,
                                        self.settings.max_chunks_in_flight)
            job = (service.claim(conn, kinds[self._turn], self.name, lease)
                   if chunk is None else None)
        if chunk is not None:
            # Like a job's lines, a chunk's carry the job's id (and which chunk, which
            # worker): one query finds every line of a split import on every instance.
            with log_context(job_id=chunk.job_id, job_type=str(JobKind.IMPORT),
                             chunk=chunk.work.seq, worker=self.name), self.busy.running():
                self._run_chunk(chunk)
            return True
        if job is None:
            return False
        with job_log_context(job.kind, job.row()), self.busy.running():
            self._run(job)
        self.sweeper.request()  # the job's file may be due at once
        return True

    def _run(self, job: Job) -> None:
        kind, job_id = job.kind, job.id
        if job.attempts > MAX_ATTEMPTS:
            self._fail(job, f"gave up after {MAX_ATTEMPTS} attempts")
            return
        log.info("%s job %s claimed (attempt %d)", kind, job_id, job.attempts)
        beat = _Heartbeat(self, lambda conn: service.renew(conn, job_id, self.name,
                                                           self.settings.lease_seconds))
        with beat, metrics.track_job(kind, job.resource):
            try:
                status = run_claimed(job, self.name, self.resources, self.stopping.is_set)
            except LeaseLost:
                log.warning("%s job %s: lease lost, another worker continues it", kind, job_id)
                return
            except psycopg.OperationalError:
                self._release(job_id)
                raise
            except Exception as exc:
                log.exception("%s job %s crashed", kind, job_id)
                self._fail(job, f"internal error: {type(exc).__name__}: {exc}")
                return
        log.info("%s job %s ended: %s", kind, job_id, status or "handed back")
        if status is not JobStatus.PROCESSING:  # split: its tail's worker reports it
            self._report(job)

    def _run_chunk(self, claim: ChunkClaim) -> None:
        job_id, seq = claim.job_id, claim.work.seq
        what = "tail" if claim.work.is_tail else f"chunk {seq}"
        if claim.attempts > MAX_ATTEMPTS:
            self._fail_split(claim, f"gave up after {MAX_ATTEMPTS} attempts at {what}")
            return
        log.info("import job %s %s claimed by %s (attempt %d)", job_id, what, self.name,
                 claim.attempts)
        beat = _Heartbeat(self, lambda conn: service.renew_chunk(
            conn, job_id, seq, self.name, self.settings.lease_seconds))
        with beat:
            try:
                finished = run_chunk(claim, self.name, self.resources, self.stopping.is_set)
            except LeaseLost:
                log.warning("import job %s %s: lease lost, another worker continues it",
                            job_id, what)
                return
            except psycopg.OperationalError:
                with contextlib.suppress(psycopg.Error), self.connect() as conn:
                    service.release_chunk(conn, job_id, seq, self.name)
                raise
            except Exception as exc:
                log.exception("import job %s %s crashed", job_id, what)
                self._fail_split(claim, f"internal error: {type(exc).__name__}: {exc}")
                return
        log.info("import job %s %s ended", job_id, what)
        if finished is not None:
            report_finished(finished.kind, finished.row())

    def _fail_split(self, claim: ChunkClaim, reason: str) -> None:
        with self.connect() as conn:
            failed = service.fail_split(conn, claim.job_id, claim.work.seq, self.name, reason)
        if failed is not None:
            report_finished(failed.kind, failed.row())

    def _report(self, job: Job) -> None:
        with contextlib.suppress(psycopg.Error), self.connect() as conn:
            report_finished(job.kind, service.get(conn, job.kind, job.id).row())

    def _release(self, job_id: str) -> None:
        with contextlib.suppress(psycopg.Error), self.connect() as conn:
            service.release(conn, job_id, self.name)

    def _fail(self, job: Job, reason: str) -> None:
        with self.connect() as conn:
            failed = service.fail(conn, job.id, self.name, reason)
        if failed is not None:
            report_finished(failed.kind, failed.row())


class _Heartbeat:
    """Renews a lease (a job's or a chunk's) every third of the lease period while it runs."""

    def __init__(self, worker: Worker, renew: Callable[[psycopg.Connection[Any]], object]
                 ) -> None:
        self.worker, self.renew = worker, renew
        self.done = threading.Event()
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._beat,),
                                       name="lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _beat(self) -> None:
        period = self.worker.settings.lease_seconds / 3
        while not self.done.wait(period):
            try:
                with self.worker.connect() as conn:
                    self.renew(conn)
            except psycopg.Error as exc:
                log.warning("lease renewal failed: %s", exc)


# --- processes ----------------------------------------------------------------------------


def worker_process_main(url: str, threads: int = 1) -> None:
    """Entry point of a worker process: ``threads`` workers, stopped by SIGTERM/SIGINT."""
    from bulkport.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    # An import's loading thread takes the GIL back after every database round trip
    # while its parse thread computes; the default 5 ms switch interval left
    # PostgreSQL idle that long each time (bench/README.md).
    interpreter.set_switch_interval()
    interpreter.tune_gc()
    stopping = threading.Event()
    busy = Busy()
    sweeper = Sweeper(settings)  # one per process: its workers take turns sweeping
    workers = [Worker(settings, url, stopping=stopping, busy=busy, sweeper=sweeper)
               for _ in range(threads)]

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=_stop_when_orphaned, args=(workers[0],), name="orphan-watch",
                     daemon=True).start()
    runners = [threading.Thread(target=w.run_forever, name=f"worker-{i}")
               for i, w in enumerate(workers)]
    for t in runners:
        t.start()
    while not stopping.wait(1.0):  # the main thread stays free to take signals
        pass
    for t in runners:
        t.join()


#: How often a worker process checks that the process that started it is alive (seconds).
ORPHAN_CHECK_SECONDS = 1.0


def _stop_when_orphaned(worker: Worker) -> None:
    """Stop gracefully once the parent (``serve``/``worker``) is gone, even after a SIGKILL."""
    parent = os.getppid()
    while not worker.stopping.wait(ORPHAN_CHECK_SECONDS):
        if os.getppid() != parent:
            log.warning("parent process %d is gone; worker stopping", parent)
            worker.stopping.set()
