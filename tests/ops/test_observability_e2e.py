"""Observability end to end: a real ``bulkport serve`` (API + worker processes) and a real
Prometheus server scraping it.

One server for the module: an import with a known outcome runs once, then each
test checks what operators see of it — /metrics (including work done in the
worker processes), the JSON log lines, Prometheus' query API — plus the limits
that only a real server shows (a streamed upload refused before its end, a
file_url redirected to loopback).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bulkport import db
from tests.conftest import FileServer, ServerProcess, empty_tables, free_port
from tests.ops.test_deploy import PROMETHEUS, alert_exprs, dashboard_exprs

pytestmark = pytest.mark.e2e

ROWS, BAD_EVERY, BATCH = 300, 5, 50  # every 5th record has an invalid role: 20% rejected
UPLOAD_LIMIT = 1 << 20


def users_csv(tag: str) -> bytes:
    lines = ["id,email,name,role"]
    for i in range(ROWS):
        role = "wizard" if i % BAD_EVERY == 0 else "reader"
        lines.append(f"{tag}-{i},{tag}-{i}@example.com,User {i},{role}")
    return ("\n".join(lines) + "\n").encode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(srv: ServerProcess) -> Samples:
    text = httpx.get(srv.base + "/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with db.connect(pg_url, autocommit=True) as conn:
        empty_tables(conn)
    env = {"BULKPORT_BATCH_SIZE": str(BATCH), "BULKPORT_LOG_FORMAT": "json",
           "BULKPORT_FETCH_ALLOW_LIST": "127.0.0.1/32",
           "BULKPORT_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("ops") / "data", workers=2,
                           env=env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def imported(srv: ServerProcess) -> dict[str, Any]:
    """One upload, run by a worker process; returns the finished job and the scrapes."""
    before = scrape(srv)
    request_id = f"ops-{uuid.uuid4().hex[:12]}"
    with srv.client() as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("users.csv", users_csv("ops"), "text/csv")},
                           headers={"X-Request-ID": request_id})
    assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"])
    assert job["status"] == "completed_with_errors", job
    assert (job["successful_records"], job["error_records"]) == (240, 60)
    return {"job": job, "request_id": request_id, "before": before, "after": scrape(srv)}


def test_metrics_move_after_an_import(imported: dict[str, Any]) -> None:
    before, after, job = imported["before"], imported["after"], imported["job"]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    users = {"type": "import", "resource": "users"}
    # Counted in the worker process, read from the API process's /metrics.
    assert delta("bulkport_records_processed_total", **users, result="ok") == 240
    assert delta("bulkport_records_processed_total", **users, result="rejected") == 60
    assert delta("bulkport_jobs_total", **users, status="completed_with_errors") == 1
    assert delta("bulkport_batch_duration_seconds_count", **users) == ROWS // BATCH
    assert delta("bulkport_batch_duration_seconds_sum", **users) > 0
    assert delta("bulkport_job_duration_seconds_count", **users,
                 status="completed_with_errors") == 1
    assert value(after, "bulkport_jobs_in_progress", **users) == 0
    assert value(after, "bulkport_job_rows_per_second", **users) == 0  # no job runs now
    # Counted in the API process.
    assert delta("bulkport_http_requests_total", method="POST", route="/v1/imports",
                 status="202") == 1
    assert delta("bulkport_http_requests_total", method="GET", route="/v1/imports/{job_id}",
                 status="200") >= 1
    assert delta("bulkport_http_request_duration_seconds_count", method="POST",
                 route="/v1/imports") == 1
    # Read at scrape time.
    assert value(after, "bulkport_database_up") == 1
    assert value(after, "bulkport_db_pool_max_connections", pool="api") >= 1
    assert value(after, "bulkport_queue_jobs", type="import", resource="users",
                 status="pending") == 0
    assert job["processed_records"] == ROWS


def test_metrics_move_after_exports(srv: ServerProcess, imported: dict[str, Any]) -> None:
    before = scrape(srv)
    with srv.client() as client:
        streamed = client.get("/v1/exports", params={"resource": "users", "format": "ndjson"})
        assert streamed.status_code == 200, streamed.text
        assert len(streamed.text.splitlines()) == 240
        resp = client.post("/v1/exports", json={"resource": "users", "format": "csv"},
                           headers={"X-Request-ID": "ops-export"})
        assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"], kind="exports")
    assert (job["status"], job["record_count"]) == ("completed", 240)
    after = scrape(srv)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    users = {"type": "export", "resource": "users"}
    assert delta("bulkport_http_requests_total", method="GET", route="/v1/exports",
                 status="200") == 1
    # The streaming export was counted while in flight and is done now.
    assert ("bulkport_export_streams_in_flight",
            frozenset({"resource": "users", "format": "ndjson"}.items())) in after
    assert value(after, "bulkport_export_streams_in_flight", resource="users",
                 format="ndjson") == 0
    # The export job ran in a worker process.
    assert delta("bulkport_jobs_total", **users, status="completed") == 1
    assert delta("bulkport_records_processed_total", **users, result="ok") == 240
    assert delta("bulkport_job_duration_seconds_count", **users, status="completed") == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        summaries = [ln for ln in _log_lines(srv) if ln.get("event") == "job_summary"
                     and ln.get("job_id") == job["job_id"]]
        if summaries:
            break
        time.sleep(0.2)
    (summary,) = summaries
    assert summary["request_id"] == "ops-export" and summary["record_count"] == 240
    assert summary["file_size_bytes"] == job["file_size_bytes"]


def test_unknown_paths_do_not_create_series(srv: ServerProcess) -> None:
    for _ in range(3):
        assert httpx.get(f"{srv.base}/no/such/{uuid.uuid4()}").status_code == 404
    samples = scrape(srv)
    routes = {dict(labels).get("route") for name, labels in samples
              if name == "bulkport_http_requests_total"}
    assert "unmatched" in routes
    assert not any(r and "/no/such" in r for r in routes)


def _log_lines(srv: ServerProcess) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in srv.log.read_text().splitlines() if line.strip()]


def test_log_lines_are_json_with_request_and_job_ids(srv: ServerProcess,
                                                     imported: dict[str, Any]) -> None:
    job_id, request_id = imported["job"]["job_id"], imported["request_id"]
    deadline = time.monotonic() + 10
    while True:  # the worker writes its summary just after the job's final status
        lines = _log_lines(srv)  # every line of every process parses as JSON
        summaries = [ln for ln in lines if ln.get("event") == "job_summary"
                     and ln.get("job_id") == job_id]
        if summaries or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all({"ts", "level", "logger", "message"} <= set(ln) for ln in lines)
    (request,) = [ln for ln in lines if ln.get("event") == "http_request"
                  and ln.get("request_id") == request_id]
    assert request["method"] == "POST" and request["route"] == "/v1/imports"
    assert request["status"] == 202 and request["duration_ms"] > 0
    job_lines = [ln for ln in lines if ln.get("job_id") == job_id]
    assert len(job_lines) >= 3  # claimed, ended, summary (+ warning)
    assert all(ln["request_id"] == request_id for ln in job_lines)
    (summary,) = summaries
    assert summary["error_rate"] == 0.2 and summary["rows_per_sec"] > 0
    assert summary["duration_ms"] >= 0 and summary["processed_records"] == ROWS
    assert (summary["successful_records"], summary["error_records"]) == (240, 60)
    warnings = [ln for ln in job_lines if ln.get("event") == "high_error_rate"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


def test_file_url_redirect_to_loopback_fails_the_job(srv: ServerProcess,
                                                     files: FileServer) -> None:
    files.body("/users.csv", users_csv("url"))
    files.redirect("/moved.csv", f"http://127.0.0.2:{files.port}/users.csv")
    with srv.client() as client:
        ok = client.post("/v1/imports",
                         json={"resource": "users", "file_url": f"{files.base}/users.csv"})
        moved = client.post("/v1/imports",
                            json={"resource": "users", "file_url": f"{files.base}/moved.csv"})
        refused = client.post("/v1/imports",
                              json={"resource": "users", "file_url": "http://10.0.0.1/u.csv"})
    assert refused.status_code == 400 and refused.json()["error"] == "url_not_allowed"
    assert srv.wait_job(ok.json()["job_id"])["status"] == "completed_with_errors"
    failed = srv.wait_job(moved.json()["job_id"])
    assert failed["status"] == "failed"
    assert "refused" in failed["failure_reason"] and "127.0.0.2" in failed["failure_reason"]
    assert "/moved.csv" in files.requests


def test_streamed_upload_is_refused_before_its_end(srv: ServerProcess) -> None:
    """A chunked body with no length: the server answers 413 while it still streams in."""
    head = (b"POST /v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    part = (b"--xyz\r\nContent-Disposition: form-data; name=\"resource\"\r\n\r\nusers\r\n"
            b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.csv\"\r\n"
            b"Content-Type: text/csv\r\n\r\n")
    chunk = b"email,name,role\n" + b"x@example.com,X,reader\n" * 2800  # ~64 KiB
    total, sent, answer = 64 * UPLOAD_LIMIT, 0, b""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        sock.settimeout(0.0)
        while sent < total and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                answer = sock.recv(4096)
            except BlockingIOError:
                pass
            except OSError:  # the server closed the connection after answering
                break
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()  # the server stops reading the body
    assert sent < total / 4  # refused long before the end
    uploads = Path(srv.args[srv.args.index("--data-dir") + 1]) / "uploads"
    assert not list(uploads.glob("*.part"))


# --- a real Prometheus ----------------------------------------------------------------------

PROMETHEUS_BIN = shutil.which("prometheus")


@pytest.fixture(scope="module")
def prometheus(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    if PROMETHEUS_BIN is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copy(PROMETHEUS / "alerts.yml", work / "alerts.yml")
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{srv.port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS_BIN, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(base: str, expr: str) -> dict[str, Any]:
    resp = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def test_prometheus_scrapes_bulkport(prometheus: str, imported: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            result = query(prometheus, 'bulkport_records_processed_total{result="rejected"}'
                           )["result"]
        except (httpx.HTTPError, json.JSONDecodeError, AssertionError):
            result = []
        if result:
            break
        time.sleep(0.5)
    assert result, "Prometheus never stored a bulkport_ series"
    assert float(result[0]["value"][1]) >= 60
    assert result[0]["metric"]["job"] == "bulkport"
    up = query(prometheus, 'up{job="bulkport"}')["result"]
    assert [float(r["value"][1]) for r in up] == [1.0]
    names = httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"]
    assert {"bulkport_http_requests_total", "bulkport_jobs_total", "bulkport_db_pool_connections",
            "bulkport_queue_jobs", "bulkport_batch_duration_seconds_bucket"} <= set(names)


def test_prometheus_evaluates_the_dashboard_and_the_alert_rules(prometheus: str,
                                                                imported: dict[str, Any]
                                                                ) -> None:
    for expr in dashboard_exprs() + alert_exprs():
        query(prometheus, expr.replace("$__rate_interval", "1m"))  # valid PromQL, no error
    deadline = time.monotonic() + 30
    groups: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("2") and
                         not r["lastEvaluation"].startswith("0001") for r in rules):
            break
        time.sleep(0.5)
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"BulkportHigh5xxRate", "BulkportHighRecordErrorRate",
                                          "BulkportJobStuck", "BulkportDbPoolExhausted"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                     for r in rules]
