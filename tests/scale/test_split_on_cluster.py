"""A split import on several instances ends exactly as one uninterrupted stream does.

The cluster of :mod:`tests.scale.test_multi_instance` (``serve`` A without workers,
``serve`` B and ``bulkport worker`` C, one PostgreSQL, moto's S3 server), started
with a small ``BULKPORT_SPLIT_MIN_BYTES`` and ``BULKPORT_CHUNK_BYTES``: a generated
users file (5% flaws, in-file repeats across chunk boundaries) uploaded to A is
cut into chunks. Each chunk is read from the bucket with a ranged GET of its
bytes (moto's request recorder shows them), the chunks run on B and C (their log
lines name the chunk and the worker), and the table, the counters, every error
and both rejected-records downloads equal those of the same file imported as
one stream by an instance alone. A SIGKILL of the instance holding a chunk
mid-way changes none of that: the other instance reclaims the chunk once its
lease ran out and resumes it after its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import S3_CREDENTIALS, ServerProcess, empty_tables, own_database, s3_env
from tests.integration.test_chunked_import import repeats_file
from tests.scale.cluster import (
    Cluster,
    Instance,
    job,
    log_entries,
    outcome,
    start_cluster,
    upload,
    wait_for,
)
from tests.scale.test_multi_instance import ENV

pytestmark = pytest.mark.e2e

#: At least this many chunks (the tail not counted).
CHUNKS = 8

#: The module's small batches (a chunk commits a hundred or more: it is caught part-way)
#: and short lease.
SPLIT_ENV = {**ENV, "BULKPORT_MAX_CHUNKS_IN_FLIGHT": "8"}

#: Status fields compared besides the counters.
MORE = ("format", "delimiter", "encoding", "failure_reason", "progress", "file_size_bytes",
        "errors")

#: The table without what differs from run to run: generated ids, default timestamps.
TABLE = ("SELECT CASE WHEN id ~ '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' "
         "THEN '<generated>' ELSE id END, lower(email), email, name, role, active, "
         "CASE WHEN created_at > now() - interval '1 hour' THEN NULL ELSE created_at END, "
         "CASE WHEN updated_at > now() - interval '1 hour' THEN NULL ELSE updated_at END "
         "FROM users ORDER BY lower(email)")


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """~20k generated users with 5% flaws and repeats of earlier records far later."""
    return repeats_file(tmp_path_factory.mktemp("split-file"), users=20_000, seed=23
                        ).read_bytes()


@pytest.fixture(scope="module")
def expected(pg_url: str, users_file: bytes, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Any]:
    """The one-stream outcome: an instance alone (local storage, one worker, never split)."""
    env = {**SPLIT_ENV, "BULKPORT_SPLIT_MIN_BYTES": "0"}
    with own_database(pg_url, "bulkport_split_reference") as url, \
            ServerProcess(url, tmp_path_factory.mktemp("reference"), workers=1,
                          env=env) as srv:
        job_id = upload(srv, "users.csv", users_file)
        assert srv.wait_job(job_id)["status"] == "completed_with_errors"
        with psycopg.connect(url) as c:  # one stream indeed
            assert c.execute("SELECT count(*) FROM import_chunks").fetchone() == (0,)
        return {**outcome(url, srv, job_id, table=TABLE), "more": _more(srv, job_id)}


@pytest.fixture(scope="module")
def split_cluster(pg_url: str, s3_endpoint: str, users_file: bytes,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS).create_bucket(
        Bucket="bulkport-split")
    env = {**SPLIT_ENV, **s3_env(s3_endpoint, "bulkport-split"),
           "BULKPORT_SPLIT_MIN_BYTES": "1",
           "BULKPORT_CHUNK_BYTES": str(len(users_file) // CHUNKS + 1)}
    with own_database(pg_url, "bulkport_split") as url:
        cluster = start_cluster(url, tmp_path_factory.mktemp("split-cluster"), env)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def s3_requests(s3_endpoint: str, tmp_path: Path) -> Iterator[Path]:
    """moto's request recorder (the server runs in this process), into a file of the test."""
    from moto.moto_api import recorder

    before, recorder._location = recorder._location, str(tmp_path / "s3-requests.ndjson")
    recorder.reset_recording()
    recorder.start_recording()
    try:
        yield Path(recorder._location)
    finally:
        recorder.stop_recording()
        recorder._location = before


def _ranges(recording: Path, file_key: str) -> set[str]:
    """The ``Range`` headers of the recorded GETs of the upload ``file_key``."""
    got = set()
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        if entry["method"] == "GET" and f"uploads/{file_key}" in entry["url"]:
            got.add(entry["headers"].get("Range", "<whole object>"))
    return got


def _empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:  # the table holds this run only
        empty_tables(c)


def _chunks(url: str, job_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT seq, status, owner, start_byte, end_byte, first_row, checkpoint, bytes_done,"
            " attempts"
            " FROM import_chunks WHERE job_id = %s AND NOT is_tail ORDER BY seq",
            (job_id,)).fetchall()


def _file_key(url: str, job_id: str) -> str:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT file_key FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _more(http: ServerProcess, job_id: str) -> dict[str, Any]:
    """Status fields beyond :data:`~tests.scale.cluster.COUNTERS` a split run keeps too."""
    status = job(http, job_id)
    with psycopg.connect(http.env["BULKPORT_DATABASE_URL"]) as c:
        stored = c.execute("SELECT bytes_processed, columns FROM jobs WHERE id = %s",
                           (job_id,)).fetchone()
    return {**{k: status[k] for k in MORE}, "stored": stored}


def _assert_one_stream(http: ServerProcess, job_id: str, expected: dict[str, Any]) -> None:
    got = outcome(http.env["BULKPORT_DATABASE_URL"], http, job_id, table=TABLE)
    assert got["counters"] == expected["counters"]
    assert _more(http, job_id) == expected["more"]
    assert got["errors"] == expected["errors"]
    assert got["downloads"] == expected["downloads"]
    assert got["rows"] == expected["rows"]


def _holder(cluster: Cluster, owner: str | None) -> Instance | None:
    """The live instance running the worker ``owner`` (``host:pid:…``)."""
    if owner is None:
        return None
    pid = int(owner.split(":")[1])
    return next((i for i in cluster.live() if pid in i.pids()), None)


def test_a_split_upload_to_a_runs_on_b_and_c_from_ranged_reads_as_one_stream(
        split_cluster: Cluster, expected: dict[str, Any], users_file: bytes,
        s3_requests: Path) -> None:
    cluster = split_cluster
    _empty(cluster.url)
    a = cluster["A"].http
    job_id = upload(a, "users.csv", users_file)
    done = cluster["B"].http.wait_job(job_id)
    assert done["status"] == "completed_with_errors", done
    _assert_one_stream(a, job_id, expected)

    chunks = _chunks(cluster.url, job_id)
    assert len(chunks) >= 6 and {c["status"] for c in chunks} == {"done"}, chunks
    # Every chunk was read from the bucket with a GET of exactly its bytes.
    ranges = _ranges(s3_requests, _file_key(cluster.url, job_id))
    assert {f"bytes={c['start_byte']}-{c['end_byte'] - 1}" for c in chunks} <= ranges, ranges
    # The chunks ran on B and on C (A has no workers), each chunk's batches on one
    # instance, and every chunk committed its batches.
    batches = {name: set(i.chunk_batches(job_id)) for name, i in cluster.instances.items()}
    claims = {name: {seq for seq, _ in i.chunk_claims(job_id)}
              for name, i in cluster.instances.items()}
    assert batches["A"] == claims["A"] == set(), (batches, claims)
    assert batches["B"] - {-1} and batches["C"] - {-1}, batches
    assert (batches["B"] | batches["C"]) - {-1} == {c["seq"] for c in chunks}, batches
    assert not (batches["B"] & batches["C"]), batches  # no chunk ran twice
    assert claims["B"] >= batches["B"] and claims["C"] >= batches["C"], (batches, claims)
    # Those lines carry the job's id, the chunk and the worker as fields too.
    lines = [e for i in cluster.live() for e in log_entries(i.log)
             if e.get("message", "").startswith(f"import {job_id} ")
             and " batch committed by " in e["message"]]
    assert len(lines) >= len(chunks) and all(
        e["job_id"] == job_id and f" by {e['worker']} " in e["message"]
        and f"chunk {e['chunk']} " in e["message"] for e in lines
        if not e["message"].startswith(f"import {job_id} tail ")), lines[:3]


def test_a_killed_instance_s_chunk_is_reclaimed_and_the_import_is_one_stream(
        split_cluster: Cluster, expected: dict[str, Any], users_file: bytes) -> None:
    cluster = split_cluster
    _empty(cluster.url)
    a = cluster["A"].http
    job_id = upload(a, "users.csv", users_file)
    held: list[tuple[Instance, dict[str, Any]]] = []

    def mid_chunk() -> bool:
        # A chunk with committed batches, less than half done (it is not done by the time
        # the kill lands), held by a live instance's worker.
        held[:] = [(i, c) for c in _chunks(cluster.url, job_id)
                   if c["status"] == "processing" and c["checkpoint"] > c["first_row"]
                   and c["bytes_done"] < (c["end_byte"] - c["start_byte"]) / 2
                   and (i := _holder(cluster, c["owner"])) is not None][:1]
        return bool(held)

    wait_for(mid_chunk, 60, "a chunk part-way through")
    victim, _ = held[0]
    victim.kill()
    # What the victim held when it died: chunks begun, not done (the first one at least).
    at_kill = {c["seq"]: c for c in _chunks(cluster.url, job_id)
               if c["status"] == "processing" and _holder(cluster, c["owner"]) is None}
    assert held[0][1]["seq"] in at_kill, at_kill
    survivor = next(i for i in cluster.live() if i.name in ("B", "C"))
    try:
        done = a.wait_job(job_id, timeout=120)
        assert done["status"] == "completed_with_errors", done
        _assert_one_stream(a, job_id, expected)
        after = {c["seq"]: c for c in _chunks(cluster.url, job_id)}
        assert {c["status"] for c in after.values()} == {"done"}, after
        reclaimed = dict(survivor.chunk_claims(job_id))
        for seq, before in at_kill.items():
            # Finished by the survivor's worker, claimed again after the victim's claim.
            assert after[seq]["owner"] != before["owner"], (seq, after[seq], before)
            assert reclaimed.get(seq, 0) > before["attempts"], (seq, reclaimed, before)
        assert {seq for seq, _ in victim.chunk_claims(job_id)} >= set(at_kill)
    finally:
        victim.process.start()  # the module's instances stay whole for any later test
        victim.killed = False
