"""``bulkport worker`` on its own serves its processes' metrics on BULKPORT_WORKER_METRICS_PORT."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bulkport.config import Settings
from tests.conftest import free_port, get_job, submit_import

pytestmark = pytest.mark.e2e


def test_standalone_worker_exposes_its_metrics(clean_db: str, settings: Settings,
                                               tmp_path: Path) -> None:
    data = tmp_path / "users.csv"
    data.write_text("email,name,role\na@example.com,A,admin\nb@example.com,B,boss\n")
    job_id = submit_import(clean_db, settings, data, "users")
    port = free_port()
    env = {**os.environ, "BULKPORT_DATABASE_URL": clean_db, "BULKPORT_WORKERS": "1",
           "BULKPORT_POLL_INTERVAL_SECONDS": "0.1", "BULKPORT_WORKER_METRICS_PORT": str(port),
           "BULKPORT_LOG_FORMAT": "json"}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bulkport", "worker", "--data-dir",
                             str(settings.data_dir)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while get_job(clean_db, job_id)["status"] in ("pending", "processing"):
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.1)
        text = ""
        while 'status="completed_with_errors"' not in text and time.monotonic() < deadline:
            time.sleep(0.1)  # the job's metrics follow its final status by a few ms
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert ('bulkport_jobs_total{resource="users",status="completed_with_errors",'
            'type="import"} 1.0') in text
    assert ('bulkport_records_processed_total{resource="users",result="rejected",'
            'type="import"} 1.0') in text
    assert (settings.data_dir / "metrics-worker").is_dir()
