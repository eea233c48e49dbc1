"""Several bulkport instances on one PostgreSQL and one S3 bucket, as real processes.

:class:`Cluster` starts them: ``serve`` instances (the API, with or without
workers) and ``worker`` instances, each with a data directory of its own and
JSON logs in a file of its own. The helpers read what the tests compare:

* :meth:`Instance.claims` — which jobs the workers of an instance claimed (its
  log lines, bound to the job's id), so a test can tell where work ran; a
  chunked import's claims can be read the same way from their own log lines;
* :meth:`Cluster.holder` — the instance whose worker holds a job's lease now;
* :func:`outcome` — everything an import's result is: the table, the counters,
  every error (row, field, code) and the rejected-records downloads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from tests.conftest import ServerProcess, stop_process


class WorkerProcess:
    """``bulkport worker`` as a real process (no HTTP): ready once its workers logged in."""

    def __init__(self, url: str, data_dir: Path, workers: int, env: dict[str, str]) -> None:
        self.env = {**os.environ, "BULKPORT_DATABASE_URL": url, **env}
        self.args = [sys.executable, "-m", "bulkport", "worker", "--data-dir", str(data_dir),
                     "--workers", str(workers)]
        self.workers = workers
        self.log = data_dir.parent / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: _started_workers(self.log) >= self.workers, timeout,
                 f"the workers of `bulkport worker` to start: {self.log}")
        return self

    def stop(self, timeout: float = 30) -> None:
        stop_process(self.proc, timeout)


def _started_workers(log: Path) -> int:
    return sum(1 for e in log_entries(log) if e.get("message", "").startswith("worker ")
               and e["message"].endswith(" started"))


def log_entries(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines of ``log`` (other lines, a traceback say, are skipped).

    Only the last line may fail to parse: the one a SIGKILLed process was writing.
    """
    if not log.exists():
        return []
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if line.startswith("{")]
    entries = [json.loads(line) for line in lines[:-1]]
    if lines:
        with contextlib.suppress(ValueError):
            entries.append(json.loads(lines[-1]))
    return entries


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.1)


@dataclass
class Instance:
    """One bulkport instance: a ``serve`` (``http`` set) or a ``worker`` process."""

    name: str
    process: ServerProcess | WorkerProcess
    killed: bool = False

    @property
    def http(self) -> ServerProcess:
        assert isinstance(self.process, ServerProcess), f"{self.name} serves no HTTP"
        return self.process

    @property
    def log(self) -> Path:
        return self.process.log

    def pids(self) -> set[int]:
        """The instance's process and its worker processes."""
        proc = self.process.proc
        if proc is None or proc.poll() is not None:
            return set()
        try:
            main = psutil.Process(proc.pid)
            return {main.pid} | {c.pid for c in main.children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def claims(self, kind: str = "import") -> dict[str, list[int]]:
        """``{job_id: [attempt, …]}`` of the jobs this instance's workers claimed."""
        claimed: dict[str, list[int]] = {}
        for e in log_entries(self.log):
            message = e.get("message", "")
            if e.get("job_id") and message.startswith(f"{kind} job ") and " claimed " in message:
                attempt = int(message.rsplit("attempt ", 1)[1].rstrip(")"))
                claimed.setdefault(e["job_id"], []).append(attempt)
        return claimed

    def chunk_claims(self, job_id: str) -> list[tuple[int, int]]:
        """``[(chunk seq, attempt), …]`` of a split import's chunks this instance's workers
        claimed, in log order (the tail is ``-1``)."""
        claims = []
        for message in self._chunk_lines(f"import job {job_id} ", " claimed by "):
            what = message.split(" claimed by ", 1)[0].removeprefix(f"import job {job_id} ")
            attempt = int(message.rsplit("attempt ", 1)[1].rstrip(")"))
            claims.append((_seq(what), attempt))
        return claims

    def chunk_batches(self, job_id: str) -> list[int]:
        """The chunk seq of every batch of ``job_id`` this instance committed (tail: -1)."""
        return [_seq(m.split(" batch committed by ", 1)[0].removeprefix(f"import {job_id} "))
                for m in self._chunk_lines(f"import {job_id} ", " batch committed by ")]

    def _chunk_lines(self, prefix: str, marker: str) -> list[str]:
        return [m for e in log_entries(self.log)
                if (m := e.get("message", "")).startswith(prefix) and marker in m]

    def kill(self) -> None:
        """SIGKILL the instance and all its processes at once: no graceful anything."""
        proc = self.process.proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.killed = True

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Cluster:
    """Instances sharing one database (``url``) and one bucket, nothing on disk."""

    url: str
    instances: dict[str, Instance] = field(default_factory=dict)

    def add(self, instance: Instance) -> Instance:
        self.instances[instance.name] = instance
        return instance

    def __getitem__(self, name: str) -> Instance:
        return self.instances[name]

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if not i.killed]

    def stop(self) -> None:
        for instance in self.instances.values():
            instance.stop()

    def holder(self, job_id: str) -> Instance | None:
        """The instance whose worker holds the job's lease (its owner is ``host:pid:…``)."""
        with psycopg.connect(self.url) as c:
            row = c.execute("SELECT owner FROM jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        pid = int(str(row[0]).split(":")[1])
        return next((i for i in self.live() if pid in i.pids()), None)

    def claims_by_instance(self, kind: str = "import") -> dict[str, dict[str, list[int]]]:
        return {name: i.claims(kind) for name, i in self.instances.items()}


def _seq(what: str) -> int:
    """``chunk 3`` → 3, ``tail`` → -1."""
    return -1 if what == "tail" else int(what.removeprefix("chunk "))


def start_cluster(url: str, root: Path, env: dict[str, str]) -> Cluster:
    """``serve`` A (no workers), ``serve`` B (one worker) and ``bulkport worker`` C (one),
    each with a data directory of its own under ``root``."""
    cluster = Cluster(url)
    try:
        cluster.add(Instance("A", ServerProcess(url, root / "a" / "data", workers=0,
                                                env=env).start()))
        cluster.add(Instance("B", ServerProcess(url, root / "b" / "data", workers=1,
                                                env=env).start()))
        cluster.add(Instance("C", WorkerProcess(url, root / "c" / "data", workers=1,
                                                env=env).start()))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def job(http: ServerProcess, job_id: str) -> dict[str, Any]:
    with http.client() as c:
        resp = c.get(f"/v1/imports/{job_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


COUNTERS = ("status", "total_records", "processed_records", "successful_records",
            "error_records", "failed_batches", "error_counts")


def outcome(url: str, http: ServerProcess, job_id: str,
            table: str = "SELECT lower(email), name, role, active, created_at, updated_at "
                         "FROM users ORDER BY 1") -> dict[str, Any]:
    """An import's whole result: the table (``table``: without generated ids, which differ
    from run to run), its counters, every error (row, field, code) and both downloads."""
    with psycopg.connect(url) as c:
        rows = c.execute(table).fetchall()  # type: ignore[arg-type]
        errors = c.execute(
            "SELECT row, e->>'field', e->>'code' FROM import_errors, "
            "jsonb_array_elements(errors) e WHERE job_id = %s ORDER BY 1, 2, 3",
            (job_id,)).fetchall()
    status = job(http, job_id)
    downloads = {}
    with http.client() as c:
        for fmt in ("csv", "ndjson"):
            got = c.get(f"/v1/imports/{job_id}/errors", params={"format": fmt})
            assert got.status_code == 200, got.text
            downloads[fmt] = got.content
    return {"rows": rows, "counters": {k: status[k] for k in COUNTERS}, "errors": errors,
            "downloads": downloads}


def upload(http: ServerProcess, name: str, content: bytes, **fields: str) -> str:
    """POST the file as an import to ``http``; the job's id."""
    with httpx.Client(base_url=http.base, timeout=60) as c:
        resp = c.post("/v1/imports", data={"resource": "users", **fields},
                      files={"file": (name, content)})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])
