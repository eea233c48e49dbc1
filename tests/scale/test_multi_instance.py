"""Several instances on one PostgreSQL and one S3 bucket: every one answers for every job.

The cluster: ``serve`` A (the API, no workers), ``serve`` B (API and workers) and
``bulkport worker`` C, each with a data directory of its own (nothing shared on
disk), one PostgreSQL server (a separate server process, reached through
``BULKPORT_DATABASE_URL``) and moto's S3 server. Uploads, ``file_url``
downloads and export files live in the bucket.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import (
    S3_CREDENTIALS,
    USERS_HUGE,
    FileServer,
    ServerProcess,
    bucket_keys,
    empty_tables,
    own_database,
    s3_env,
)
from tests.scale.cluster import (
    Cluster,
    Instance,
    job,
    outcome,
    start_cluster,
    upload,
    wait_for,
)

pytestmark = pytest.mark.e2e

#: Small batches and a short lease: a killed instance's job is taken over within seconds.
#: file_url may reach the test's file server on loopback.
ENV = {"BULKPORT_LOG_FORMAT": "json", "BULKPORT_BATCH_SIZE": "20",
       "BULKPORT_LEASE_SECONDS": "3", "BULKPORT_POLL_INTERVAL_SECONDS": "0.1",
       "BULKPORT_ALLOW_PRIVATE_URLS": "true"}


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Iterator[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    s3.create_bucket(Bucket="bulkport-scale")
    yield "bulkport-scale"


@pytest.fixture(scope="module")
def cluster(pg_url: str, s3_endpoint: str, bucket: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    env = {**ENV, **s3_env(s3_endpoint, bucket)}
    with own_database(pg_url, "bulkport_scale") as url:
        cluster = start_cluster(url, root, env)
        try:
            data_dirs = {i.process.args[i.process.args.index("--data-dir") + 1]
                         for i in cluster.instances.values()}
            assert len(data_dirs) == 3  # each its own: nothing shared on disk
            yield cluster
        finally:
            cluster.stop()
        for name in "abc":  # nothing of any file stayed on an instance's disk
            data = root / name / "data"
            assert [p.name for p in (data / "uploads").glob("*")] == []
            assert [p.name for p in (data / "exports").glob("*")] == []


def _users(prefix: str, n: int) -> bytes:
    """``n`` users, every tenth with a role that does not exist."""
    lines = [f"{prefix}-{i}@example.com,User {i},{'boss' if i % 10 == 3 else 'reader'}"
             for i in range(n)]
    return ("email,name,role\n" + "\n".join(lines) + "\n").encode()


def test_an_upload_to_a_is_run_elsewhere_and_every_instance_answers(
        cluster: Cluster, s3_endpoint: str, bucket: str) -> None:
    a, b = cluster["A"].http, cluster["B"].http
    job_id = upload(a, "first.csv", _users("first", 200))
    done = b.wait_job(job_id)
    assert (done["status"], done["successful_records"], done["error_records"]) == (
        "completed_with_errors", 180, 20), done
    claimed = {name: claims for name, claims in cluster.claims_by_instance().items()
               if job_id in claims}
    assert set(claimed) in ({"B"}, {"C"}), claimed  # A has no workers
    with a.client() as ca, b.client() as cb:
        for fmt in ("csv", "ndjson"):  # the rejected records, through either instance
            via_b = cb.get(f"/v1/imports/{job_id}/errors", params={"format": fmt})
            assert via_b.status_code == 200 and via_b.content.count(b"first-") == 20
            assert ca.get(f"/v1/imports/{job_id}/errors", params={"format": fmt}
                          ).content == via_b.content
        listed = cb.get("/v1/imports", params={"limit": 100}).json()
        assert job_id in {j["job_id"] for j in listed["data"]}
        # An export made on B downloads through A (a presigned URL into the bucket).
        export = cb.post("/v1/exports", json={"resource": "users", "format": "csv"})
        assert export.status_code == 202, export.text
        export_id = export.json()["job_id"]
        finished = b.wait_job(export_id, "exports")
        assert finished["status"] == "completed", finished
        redirect = ca.get(f"/v1/exports/{export_id}/download")
        assert redirect.status_code == 307, redirect.text
        assert redirect.headers["location"].startswith(f"{s3_endpoint}/{bucket}/exports/")
        exported = httpx.get(redirect.headers["location"])
        assert exported.status_code == 200 and exported.content.count(b"first-") == 180
        streamed = ca.get("/v1/exports", params={"resource": "users", "format": "csv"})
        assert streamed.content == exported.content
        # A job created on A is cancelled through B.
        pending = ca.post("/v1/exports", json={"resource": "users", "format": "ndjson"})
        cancelled = cb.post(f"/v1/exports/{pending.json()['job_id']}/cancel")
        assert cancelled.status_code in (200, 409), cancelled.text
        final = a.wait_job(pending.json()["job_id"], "exports")["status"]
        assert final == ("cancelled" if cancelled.status_code == 200 else "completed")


def test_a_file_url_import_on_a_is_downloaded_into_the_bucket_by_a_worker(
        cluster: Cluster, s3_endpoint: str, bucket: str, file_server: FileServer) -> None:
    file_server.body("/remote.csv", _users("remote", 100))
    with cluster["A"].http.client() as ca:
        created = ca.post("/v1/imports", json={
            "resource": "users", "file_url": file_server.base + "/remote.csv"})
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    done = cluster["B"].http.wait_job(job_id)
    assert (done["status"], done["successful_records"], done["error_records"]) == (
        "completed_with_errors", 90, 10), done
    assert f"uploads/{_file_key(cluster, job_id)}" in bucket_keys(_s3(s3_endpoint), bucket)


def test_twenty_concurrent_imports_spread_over_the_instances(cluster: Cluster) -> None:
    apis = [cluster["A"].http, cluster["B"].http]
    ids: dict[int, str] = {}

    def post(i: int) -> None:
        ids[i] = upload(apis[i % 2], f"batch-{i}.csv", _users(f"many{i}", 150))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 20
    for i, job_id in ids.items():
        done = apis[(i + 1) % 2].wait_job(job_id)  # read from the other API
        assert (done["status"], done["processed_records"], done["successful_records"],
                done["error_records"], done["error_counts"]) == (
            "completed_with_errors", 150, 135, 15, {"invalid_role": 15}), done
    with psycopg.connect(cluster.url) as c:
        assert c.execute("SELECT count(*) FROM users WHERE email LIKE 'many%'"
                         ).fetchone() == (20 * 135,)
    claims = cluster.claims_by_instance()
    ran = {name: sorted(set(ids.values()) & set(jobs)) for name, jobs in claims.items()}
    assert ran["A"] == [], ran
    assert ran["B"] and ran["C"], ran  # both instances with workers took jobs
    assert sorted(ran["B"] + ran["C"]) == sorted(ids.values())  # each job claimed once


@pytest.fixture
def reference(pg_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """One instance alone (local storage, one worker) on a database of its own."""
    with own_database(pg_url, "bulkport_scale_reference") as url, \
            ServerProcess(url, tmp_path / "reference", workers=1, env=ENV) as srv:
        yield srv


def test_a_killed_instance_s_job_is_finished_elsewhere_as_if_never_interrupted(
        cluster: Cluster, reference: ServerProcess, s3_endpoint: str, bucket: str) -> None:
    with psycopg.connect(cluster.url, autocommit=True) as c:  # the table holds this run only
        empty_tables(c)
    content = gzip.compress(USERS_HUGE.read_bytes())  # gzip: the resume re-reads the start
    expected_id = upload(reference, "users.csv.gz", content)
    assert reference.wait_job(expected_id)["status"] == "completed_with_errors"
    expected = outcome(reference.env["BULKPORT_DATABASE_URL"], reference, expected_id)

    a = cluster["A"].http
    job_id = upload(a, "users.csv.gz", content)
    holder: list[Instance] = []

    def running() -> bool:
        status = job(a, job_id)
        assert status["status"] in ("pending", "processing"), status  # not done yet
        found = cluster.holder(job_id) if status["processed_records"] >= 1000 else None
        holder[:] = [found] if found else []
        return bool(holder)

    wait_for(running, 60, "the import to be part-way through")
    victim = holder[0]
    at_kill = job(a, job_id)["processed_records"]
    victim.kill()
    survivor = next(i for i in cluster.live() if i.name in ("B", "C"))
    try:
        done = a.wait_job(job_id, timeout=120)
        assert done["status"] == "completed_with_errors", done
        assert at_kill < done["total_records"]  # killed mid-way, not after the end
        got = outcome(cluster.url, a, job_id)
        assert got["counters"] == expected["counters"]
        assert got["errors"] == expected["errors"]
        assert got["downloads"] == expected["downloads"]
        assert got["rows"] == expected["rows"]
        # The survivor took the job over once the victim's lease ran out.
        assert survivor.claims().get(job_id, [])[-1:] == [2], cluster.claims_by_instance()
        assert 1 in victim.claims()[job_id]
        assert f"uploads/{_file_key(cluster, job_id)}" in bucket_keys(_s3(s3_endpoint), bucket)
    finally:
        victim.process.start()  # the module's instances stay whole for any later test
        victim.killed = False


def _file_key(cluster: Cluster, job_id: str) -> str:
    with psycopg.connect(cluster.url) as c:
        row = c.execute("SELECT file_key FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, **S3_CREDENTIALS)

