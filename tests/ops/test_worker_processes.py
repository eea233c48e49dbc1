"""The worker processes of a real ``bulkport serve`` load only what workers need.

A worker process imports the worker loop and the pipelines, never the web
stack (FastAPI, Starlette, uvicorn, the API modules), nor pydantic (the
settings come validated from the parent), nor boto3 when exports are stored
locally: each of those is memory every worker process would hold
for nothing (bench/README.md, "Process memory").

What a process imported is read from the process itself: a ``sitecustomize``
module on ``PYTHONPATH`` (inherited by every process the server starts)
writes each process's ``sys.modules`` to a file when it exits.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

SITECUSTOMIZE = '''
import atexit, os, sys

def _write_modules():
    path = os.path.join(os.environ["BULKPORT_TEST_MODULES_DIR"], f"{os.getpid()}.txt")
    with open(path, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))

atexit.register(_write_modules)
'''
#: Modules no worker process may hold (boto3: not while exports are stored locally).
WEB_AND_S3 = ("fastapi", "starlette", "uvicorn", "bulkport.api", "boto3", "botocore")
#: pydantic checks the settings in the parent; a worker process gets them checked.
PYDANTIC = ("pydantic", "pydantic_settings", "pydantic_core")


def _modules(folder: Path, pid: int) -> set[str]:
    return set((folder / f"{pid}.txt").read_text().split("\n"))


def test_worker_processes_load_no_web_stack_pydantic_boto3(clean_db: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    dumps = tmp_path / "modules"
    dumps.mkdir()
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    srv = ServerProcess(clean_db, tmp_path / "data", workers=2,
                        env={"PYTHONPATH": path, "BULKPORT_TEST_MODULES_DIR": str(dumps)})
    with srv:
        assert srv.proc is not None
        server_pid = srv.proc.pid
        with srv.client() as http:
            # The workers run an import and an export job first: what a job needs
            # is loaded while it runs, and must still be no web stack.
            r = http.post("/v1/imports", files={"file": ("u.csv", b"email,name,role\n"
                                                                  b"a@example.com,A,admin\n")},
                          data={"resource": "users"})
            assert r.status_code == 202, r.text
            assert srv.wait_job(r.json()["job_id"])["status"] == "completed"
            r = http.post("/v1/exports", json={"resource": "users", "format": "csv"})
            assert r.status_code == 202, r.text
            assert srv.wait_job(r.json()["job_id"], "exports")["status"] == "completed"
        workers = [p.pid for p in psutil.Process(server_pid).children(recursive=True)]
    assert workers
    server = _modules(dumps, server_pid)
    assert {"fastapi", "uvicorn", "bulkport.api.app"} <= server  # the dumps see them
    ran = {"bulkport.pipeline.importer", "bulkport.pipeline.export.filesink"}
    seen: set[str] = set()
    for pid in workers:
        modules = _modules(dumps, pid)
        assert "bulkport.jobs.worker" in modules
        seen |= modules
        heavy = sorted(m for m in modules if m.split(".")[0] in WEB_AND_S3 + PYDANTIC
                       or m.startswith("bulkport.api"))
        assert heavy == [], f"worker process {pid} imported {heavy}"
    assert ran <= seen  # the jobs did run in these processes


def test_serve_starts_only_worker_processes(clean_db: str, tmp_path: Path) -> None:
    """One process per core up to the worker count, and no helper process beside them."""
    with ServerProcess(clean_db, tmp_path / "data", workers=4) as srv:
        assert srv.proc is not None
        children = psutil.Process(srv.proc.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in children]
    expected = min(4, os.cpu_count() or 1)
    assert len(commands) == expected, commands
    assert all("bulkport.jobs.processes" in c for c in commands), commands
