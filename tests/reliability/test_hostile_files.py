"""Every file of the hostile corpus (tests/hostile/) through a real server.

Each gives a clear per-record error or a ``failed`` job with a readable reason,
never a 5xx on any endpoint, and never more memory than a bound; the workers
that processed them keep serving (same processes, a good import right after).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ServerProcess
from tests.hostile.corpus import CASES, TEST_MAX_DECOMPRESSED_BYTES, Case
from tests.reliability.conftest import FAST_ENV, kill_group, upload

#: Resident memory no worker may pass while reading a hostile file (bytes).
MAX_WORKER_RSS_BYTES = 1024 * 1024 * 1024


@pytest.fixture(scope="module")
def hostile_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    srv = ServerProcess(pg_url, data, workers=2, env={
        **FAST_ENV, "BULKPORT_MAX_DECOMPRESSED_BYTES": str(TEST_MAX_DECOMPRESSED_BYTES)})
    try:
        yield srv.start()
    finally:
        srv.stop()
        kill_group(srv.proc)


def _workers(srv: ServerProcess) -> set[int]:
    assert srv.proc is not None
    return {p.pid for p in psutil.Process(srv.proc.pid).children(recursive=True)}


@pytest.fixture(scope="module")
def worker_pids(hostile_server: ServerProcess) -> set[int]:
    pids = _workers(hostile_server)
    assert len(pids) >= 2
    return pids


class PeakMemory:
    """Samples the RSS of the server's worker processes in a thread."""

    def __init__(self, pids: set[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.02):
            for p in self.procs:
                with contextlib.suppress(psutil.Error):
                    self.peak = max(self.peak, p.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(5)


def _no_5xx(srv: ServerProcess, job_id: str) -> dict[str, object]:
    with srv.client() as client:
        job = client.get(f"/v1/imports/{job_id}")
        assert job.status_code == 200, job.text
        for fmt in ("json", "ndjson", "csv"):
            errors = client.get(f"/v1/imports/{job_id}/errors", params={"format": fmt})
            assert errors.status_code == 200, (fmt, errors.text[:500])
        listing = client.get("/v1/imports", params={"limit": 100})
        assert listing.status_code == 200
    body: dict[str, object] = job.json()
    return body


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file(case: Case, hostile_server: ServerProcess, worker_pids: set[int],
                      clean_db: str, tmp_path: Path) -> None:
    srv = hostile_server
    path = tmp_path / case.filename
    case.build(path)
    with PeakMemory(worker_pids) as memory:
        resp = upload(srv.base, path, case.resource, fmt=case.fmt)
        assert resp.status_code < 500, resp.text
        assert resp.status_code == case.http, resp.text
        if case.http != 202:
            body = resp.json()
            assert body["error"] and body["message"]
            return
        job = srv.wait_job(resp.json()["job_id"], timeout=120)
    assert memory.peak < MAX_WORKER_RSS_BYTES, f"a worker reached {memory.peak >> 20} MiB"
    job = _no_5xx(srv, str(job["job_id"]))
    assert job["status"] in case.status, (job["status"], job["failure_reason"],
                                          job["error_counts"])
    if job["status"] == "failed":
        reason = job["failure_reason"]
        assert isinstance(reason, str) and len(reason) > 10
        assert "internal error" not in reason, reason
        if case.reason is not None:
            assert case.reason.lower() in reason.lower(), reason
    else:
        codes = set(job["error_counts"])  # type: ignore[arg-type]
        assert case.codes <= codes, (case.codes, codes)
        assert "rejected_by_database" not in codes or case.name == "timezone_out_of_range"
        if case.counts is not None:
            assert (job["successful_records"], job["error_records"]) == case.counts


def test_workers_keep_serving(hostile_server: ServerProcess, worker_pids: set[int],
                              tmp_path: Path) -> None:
    """Runs after the corpus: the same worker processes still import a good file."""
    path = tmp_path / "good.csv"
    path.write_text("email,name,role\nz@example.com,Zed,admin\ny@example.com,Yan,reader\n")
    job = hostile_server.wait_job(upload(hostile_server.base, path).json()["job_id"])
    assert job["status"] == "completed"
    assert job["successful_records"] == 2
    assert _workers(hostile_server) == worker_pids, "a worker process died and was replaced"
    assert "Traceback" not in hostile_server.log.read_text(errors="replace")
