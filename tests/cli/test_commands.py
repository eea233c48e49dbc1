"""``bulkport import|export|jobs`` as processes against real servers: results and exit codes."""

from __future__ import annotations

import csv
import gzip
import json
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bulkport.client.http import Connection
from bulkport.client.imports import upload
from tests.cli.conftest import API_KEY, HUGE_CODES, bulkport, clean_users, cli_env
from tests.conftest import USERS_HUGE, ServerProcess, free_port
from tests.export_data import export_bytes, seed

pytestmark = pytest.mark.e2e


def one_line(text: str) -> str:
    """The single line of an error message: no traceback, nothing else."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- import ----------------------------------------------------------------------------


def test_import_huge_reports_exact_counts_and_saves_rejects(
        srv: ServerProcess, sql: psycopg.Connection[Any], tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.csv"
    r = bulkport("import", str(USERS_HUGE), "--resource", "users", "--wait", "--json",
                 "--errors-out", str(rejects), env=cli_env(srv))
    assert r.returncode == 3, r.stderr
    job = json.loads(r.stdout)  # one JSON document, nothing else on stdout
    assert job["status"] == "completed_with_errors"
    assert (job["processed_records"], job["successful_records"], job["error_records"]) == (
        10_000, 9_667, 333)
    assert job["error_counts"] == HUGE_CODES
    assert job["errors_file"] == {"path": str(rejects), "records": 333}
    with rejects.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 333
    codes = Counter(c for row in rows for c in row["_errors"].split(";"))
    assert codes == HUGE_CODES
    assert sql.execute("SELECT count(*) FROM users").fetchone() == (9_667,)
    assert r.stderr == ""  # no bars off a terminal


def test_clean_file_exits_0_with_a_plain_summary(
        srv: ServerProcess, sql: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = clean_users(tmp_path / "clean.csv", 30)
    r = bulkport("import", str(path), "-r", "users", "--wait", env=cli_env(srv))
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout and "successful 30" in r.stdout and "rejected 0" in r.stdout
    assert "\x1b[" not in r.stdout + r.stderr  # not a terminal: no escape sequences
    assert sql.execute("SELECT count(*) FROM users").fetchone() == (30,)


def test_summary_lists_error_counts_and_the_errors_url(
        srv: ServerProcess, sql: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = clean_users(tmp_path / "some-bad.csv", 20, bad_roles=3)
    r = bulkport("import", str(path), "-r", "users", "--wait", env=cli_env(srv))
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    assert "successful 17" in r.stdout and "rejected 3" in r.stdout
    assert any(line.split() == ["invalid_role", "3"] for line in lines), r.stdout
    job_id = lines[0].split()[1]
    assert f"errors: {srv.base}/v1/imports/{job_id}/errors" in lines


def test_failed_job_exits_1_and_show_wait_comes_back_to_it(
        srv: ServerProcess, sql: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = tmp_path / "header-only.csv"  # no records: the job fails
    path.write_text("id,email,name,role,active,created_at,updated_at\n")
    r = bulkport("import", str(path), "-r", "users", env=cli_env(srv))
    assert r.returncode == 0, r.stderr  # created; not waited for
    job_id = r.stdout.split()[1]
    assert f"bulkport jobs show {job_id} --wait" in r.stdout
    r = bulkport("jobs", "show", job_id, "--wait", env=cli_env(srv))
    assert r.returncode == 1
    assert f"job {job_id} failed" in r.stdout and "failure: " in r.stdout


def test_dry_run_writes_nothing(srv: ServerProcess, sql: psycopg.Connection[Any],
                                tmp_path: Path) -> None:
    path = clean_users(tmp_path / "dry.csv", 10)
    r = bulkport("import", str(path), "-r", "users", "--dry-run", "--wait", "--json",
                 env=cli_env(srv))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dry_run"] is True
    assert sql.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_idempotency_key_returns_the_first_job(srv: ServerProcess, sql: psycopg.Connection[Any],
                                               tmp_path: Path) -> None:
    path = clean_users(tmp_path / "once.csv", 5)
    args = ("import", str(path), "-r", "users", "--json", "--idempotency-key", "cli-once")
    first = json.loads(bulkport(*args, env=cli_env(srv)).stdout)
    second = json.loads(bulkport(*args, env=cli_env(srv)).stdout)
    assert first["job_id"] == second["job_id"]


def test_upload_streams_the_file(srv: ServerProcess, sql: psycopg.Connection[Any],
                                 tmp_path: Path) -> None:
    """A 32 MiB upload never holds more than a few chunks of it in memory."""
    path = tmp_path / "one-long-line.ndjson"  # one record over MAX_LINE_BYTES: quick to reject
    with path.open("wb") as f:
        f.write(b'{"email": "')
        for _ in range(32):
            f.write(b"a" * (1 << 20))
        f.write(b'"}\n')
    sent: list[int] = []
    tracemalloc.start()
    try:
        job = upload(Connection(srv.base, API_KEY), path, {"resource": "users"}, None,
                     sent.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sent) == path.stat().st_size
    assert len(sent) > 100  # counted chunk by chunk as they were sent
    assert peak < 8 * (1 << 20), peak
    assert job["file_size_bytes"] == path.stat().st_size


def test_refused_key_exits_4(srv: ServerProcess, tmp_path: Path) -> None:
    path = clean_users(tmp_path / "k.csv", 2)
    r = bulkport("import", str(path), "-r", "users", env=cli_env(srv, BULKPORT_API_KEY="nope"))
    assert r.returncode == 4
    assert "API key is not valid" in one_line(r.stderr)
    no_key = cli_env(srv)
    del no_key["BULKPORT_API_KEY"]
    r = bulkport("jobs", "list", env=no_key)
    assert r.returncode == 4
    assert "Authorization: Bearer" in one_line(r.stderr)


def test_unreachable_server_exits_1_with_one_line(tmp_path: Path) -> None:
    path = clean_users(tmp_path / "u.csv", 2)
    url = f"http://127.0.0.1:{free_port()}"
    r = bulkport("import", str(path), "-r", "users", "--url", url, env=cli_env())
    assert r.returncode == 1
    assert f"cannot reach the bulkport server at {url}" in one_line(r.stderr)


def test_usage_errors_exit_2(srv: ServerProcess, tmp_path: Path) -> None:
    path = clean_users(tmp_path / "u.csv", 2)
    env = cli_env(srv)
    r = bulkport("import", str(path), env=env)  # --resource missing
    assert r.returncode == 2 and "--resource" in r.stderr
    r = bulkport("import", str(tmp_path / "missing.csv"), "-r", "users", env=env)
    assert r.returncode == 2 and "no such file" in one_line(r.stderr)
    r = bulkport("import", str(path), "-r", "widgets", env=env)  # refused by the server (400)
    assert r.returncode == 2 and "widgets" in one_line(r.stderr)
    r = bulkport("import", str(path), "-r", "users", "--errors-out", "x.txt", env=env)
    assert r.returncode == 2 and ".csv or .ndjson" in one_line(r.stderr)
    r = bulkport("export", "-r", "users", "--filter", "role", env=env)
    assert r.returncode == 2 and "KEY=VALUE" in one_line(r.stderr)


# --- export ----------------------------------------------------------------------------


def test_export_writes_exactly_the_rows_of_the_table(
        srv: ServerProcess, sql: psycopg.Connection[Any], pg_url: str, tmp_path: Path) -> None:
    seed(sql)  # quotes, CR/LF inside fields, formulas, unicode, nulls
    out = tmp_path / "out.csv"
    r = bulkport("export", "--resource", "users", "-o", str(out), env=cli_env(srv))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == export_bytes(pg_url, "users", "csv")
    ids = [row[0] for row in sql.execute("SELECT id FROM users ORDER BY id")]
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["id"] for row in rows] == [str(i) for i in ids]
    assert f"exported {len(ids)} users records" in one_line(r.stderr)
    assert not (tmp_path / "out.csv.part").exists()


def test_export_gzip_ndjson_fields_and_filters(
        srv: ServerProcess, sql: psycopg.Connection[Any], pg_url: str, tmp_path: Path) -> None:
    seed(sql)
    out = tmp_path / "articles.ndjson.gz"
    r = bulkport("export", "-r", "articles", "-o", str(out), env=cli_env(srv))
    assert r.returncode == 0, r.stderr
    assert gzip.decompress(out.read_bytes()) == export_bytes(pg_url, "articles", "ndjson")
    count = sql.execute("SELECT count(*) FROM articles").fetchone()
    assert count is not None and f"exported {count[0]} articles records" in r.stderr
    r = bulkport("export", "-r", "comments", "-o", str(tmp_path / "c.csv"), "--json",
                 env=cli_env(srv))
    summary = json.loads(r.stdout)
    comments = sql.execute("SELECT count(*) FROM comments").fetchone()
    assert comments is not None and summary["records"] == comments[0] > 0
    assert summary["bytes"] == (tmp_path / "c.csv").stat().st_size
    r = bulkport("export", "-r", "users", "--format", "json", "--fields", "id,email",
                 "--filter", "role=admin", "-o", "-", env=cli_env(srv))
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == export_bytes(pg_url, "users", "json", "id,email",
                                             {"role": ["admin"]})


# --- jobs ------------------------------------------------------------------------------


def test_jobs_list_show_errors_and_cancel(srv: ServerProcess, sql: psycopg.Connection[Any],
                                          tmp_path: Path) -> None:
    env = cli_env(srv)
    path = clean_users(tmp_path / "jobs.csv", 12, bad_roles=2)
    r = bulkport("import", str(path), "-r", "users", "--wait", "--json", env=env)
    job_id = json.loads(r.stdout)["job_id"]
    listed = json.loads(bulkport("jobs", "list", "--json", env=env).stdout)
    assert [j["job_id"] for j in listed["data"]] == [job_id]
    table = bulkport("jobs", env=env)  # "list" is the default
    assert table.returncode == 0 and job_id in table.stdout
    show = bulkport("jobs", "show", job_id, "--json", env=env)
    assert show.returncode == 3
    assert json.loads(show.stdout)["error_counts"] == {"invalid_role": 2}
    errors = json.loads(bulkport("jobs", "errors", job_id, "--json", env=env).stdout)
    assert [(e["row"], e["code"]) for e in errors["data"]] == [(11, "invalid_role"),
                                                              (12, "invalid_role")]
    text = bulkport("jobs", "errors", job_id, env=env).stdout
    assert "invalid_role" in text and "role must be one of" in text
    saved = tmp_path / "rejects.ndjson"
    r = bulkport("jobs", "errors", job_id, "-o", str(saved), env=env)
    assert r.returncode == 0
    assert [json.loads(line)["row"] for line in saved.read_text().splitlines()] == [11, 12]
    r = bulkport("jobs", "cancel", job_id, env=env)  # already completed: 409
    assert r.returncode == 1 and "409" in one_line(r.stderr)
    r = bulkport("jobs", "show", "00000000-0000-0000-0000-000000000000", env=env)
    assert r.returncode == 1 and "404" in one_line(r.stderr)


def test_cancel_a_pending_job(idle: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(idle)
    path = clean_users(tmp_path / "cancel.csv", 3)
    job_id = json.loads(bulkport("import", str(path), "-r", "users", "--json", env=env).stdout
                        )["job_id"]
    r = bulkport("jobs", "cancel", job_id, env=env)
    assert r.returncode == 0 and "cancelled" in r.stdout
    assert httpx.get(f"{idle.base}/v1/imports/{job_id}").json()["status"] == "cancelled"


# --- waiting ---------------------------------------------------------------------------


def test_wait_timeout_exits_5_and_names_the_job(idle: ServerProcess, tmp_path: Path) -> None:
    path = clean_users(tmp_path / "slow.csv", 3)
    started = time.monotonic()
    r = bulkport("import", str(path), "-r", "users", "--wait", "--timeout", "1",
                 env=cli_env(idle))
    assert r.returncode == 5
    message = one_line(r.stderr)
    job_id = message.split()[2]
    assert f"bulkport jobs show {job_id} --wait" in message
    assert time.monotonic() - started < 60
    assert httpx.get(f"{idle.base}/v1/imports/{job_id}").json()["status"] == "pending"


def _waiting_import(server: ServerProcess, path: Path, *extra: str
                    ) -> tuple[subprocess.Popen[str], str]:
    """``bulkport import PATH --wait`` started in the background, once its job exists."""
    jobs = f"{server.base}/v1/imports?limit=100"
    before = {j["job_id"] for j in httpx.get(jobs).json()["data"]}
    proc = subprocess.Popen([sys.executable, "-m", "bulkport", "import", str(path), "-r", "users",
                             "--wait", *extra], env=cli_env(server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    new: set[str] = set()
    while not new and time.monotonic() < deadline:  # the upload is done: it is waiting
        time.sleep(0.2)
        new = {j["job_id"] for j in httpx.get(jobs).json()["data"]} - before
    (job_id,) = new
    time.sleep(0.5)
    return proc, job_id


def test_ctrl_c_while_waiting_leaves_the_job_running(idle: ServerProcess, tmp_path: Path) -> None:
    proc, job_id = _waiting_import(idle, clean_users(tmp_path / "ctrl-c.csv", 3))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert f"bulkport jobs cancel {job_id}" in one_line(err)
    assert httpx.get(f"{idle.base}/v1/imports/{job_id}").json()["status"] == "pending"


def test_wait_outlives_a_server_restart(idle: ServerProcess, tmp_path: Path) -> None:
    proc, job_id = _waiting_import(idle, clean_users(tmp_path / "restart.csv", 3),
                                   "--timeout", "8", "--json")
    idle.stop()
    time.sleep(1.5)  # a few polls find nothing listening
    idle.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err  # still waiting at the end, not failed on the outage
    assert json.loads(out)["job_id"] == job_id


def test_key_from_option_overrides_environment(srv: ServerProcess) -> None:
    env = cli_env(srv, BULKPORT_API_KEY="wrong")
    r = bulkport("jobs", "list", "--api-key", API_KEY, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert "data" in json.loads(r.stdout)
