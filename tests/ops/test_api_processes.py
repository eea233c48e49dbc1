"""``bulkport serve`` with ``BULKPORT_API_PROCESSES=2``: two API processes on one port.

A real server process, started as operators start it. The test checks what
must hold whichever process answers a request: the answers are the same (the
first-errors cache is per process and checks the job's version on every read),
the request counters of ``/metrics`` add up over both processes (prometheus
multiprocess mode), and a SIGTERM stops every process ``serve`` started.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import psutil

from tests.conftest import ServerProcess

CSV = (b"email,name,role\n" + b"".join(b"bad-%d,User,reader\n" % i for i in range(3))
       + b"ok1@example.com,User,reader\n")
#: Reads, each on a new connection, so that both processes answer some.
READS = 40
COUNTER = re.compile(
    r'^bulkport_http_requests_total\{method="GET",route="/v1/imports/\{job_id\}",'
    r'status="200"\} (\S+)$', re.M)


def _api_processes(serve: psutil.Process) -> list[psutil.Process]:
    return [p for p in serve.children() if "multiprocessing.spawn" in " ".join(p.cmdline())]


def test_two_api_processes_answer_alike_and_stop_together(clean_db: str,
                                                          tmp_path: Path) -> None:
    srv = ServerProcess(clean_db, tmp_path / "data", workers=1,
                        env={"BULKPORT_API_PROCESSES": "2"}).start()
    try:
        assert srv.proc is not None
        serve = psutil.Process(srv.proc.pid)
        api = _api_processes(serve)
        assert len(api) == 2
        everything = serve.children(recursive=True)
        with srv.client() as c:
            resp = c.post("/v1/imports", data={"resource": "users"},
                          files={"file": ("u.csv", CSV, "text/csv")})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["job_id"]
        done = srv.wait_job(job_id)
        assert done["status"] == "completed_with_errors"
        bodies = set()
        for _ in range(READS):
            with httpx.Client(base_url=srv.base, timeout=30) as fresh:
                resp = fresh.get(f"/v1/imports/{job_id}")
                assert resp.status_code == 200
                bodies.add(resp.content)
        assert len(bodies) == 1
        assert [e["row"] for e in done["errors"]] == [1, 2, 3]
        with httpx.Client(base_url=srv.base, timeout=30) as fresh:
            metrics = fresh.get("/metrics").text
        counted = COUNTER.search(metrics)
        assert counted is not None
        # The polls of wait_job are counted too: at least READS, whichever process
        # answered each (the kernel hands each new connection to one of them).
        assert float(counted.group(1)) >= READS + 1
    finally:
        srv.stop()
    _gone, alive = psutil.wait_procs(everything, timeout=30)
    assert alive == []
