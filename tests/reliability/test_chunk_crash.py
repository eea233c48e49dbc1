"""A split import whose worker process is SIGKILLed mid-chunk ends as an uninterrupted run.

``bulkport worker`` processes claim the chunks; the first one is killed (its whole
process group) while it holds chunks with committed batches. Their leases expire,
a second worker process reclaims them, resumes each after its checkpoint, runs
the tail, and the table, the counters and the rejected-records downloads equal
those of one uninterrupted stream.
"""

from __future__ import annotations

from pathlib import Path

from bulkport import db
from bulkport.config import Settings
from tests.conftest import empty_tables, get_job, submit_import
from tests.integration.test_chunked_import import downloads as error_downloads
from tests.integration.test_chunked_import import one_run, repeats_file, table
from tests.reliability.conftest import Processes, kill_group, wait_until

CHUNK_ENV = {"BULKPORT_SPLIT_MIN_BYTES": "1", "BULKPORT_CHUNK_BYTES": str(96 * 1024),
             "BULKPORT_BATCH_SIZE": "150", "BULKPORT_MAX_CHUNKS_IN_FLIGHT": "4"}


def _chunks(url: str, job_id: str) -> list[tuple[int, str, str | None, int, int]]:
    with db.connect(url, autocommit=True) as c:
        return [tuple(r) for r in c.execute(  # type: ignore[misc]
            "SELECT seq, status, owner, checkpoint, first_row FROM import_chunks"
            " WHERE job_id = %s AND NOT is_tail ORDER BY seq", (job_id,))]


def test_sigkill_of_a_chunk_worker_loses_nothing(procs: Processes, settings: Settings,
                                                 tmp_path: Path) -> None:
    url = procs.url
    path = repeats_file(tmp_path, users=12_000, seed=11)
    expected = one_run(url, settings.model_copy(update={"split_min_bytes": 0,
                                                        "batch_size": 150}), path, 1)
    with db.connect(url, autocommit=True) as c:
        empty_tables(c, ("users", "jobs"))

    data_dir = tmp_path / "data"
    first = procs.worker(data_dir, workers=2, env=CHUNK_ENV).start()
    job_id = submit_import(url, settings.model_copy(update={"data_dir": data_dir}), path,
                           "users")

    def mid_chunk() -> bool:
        # A chunk the first worker holds has committed batches but is not done.
        return any(status == "processing" and checkpoint > first_row
                   for _, status, _, checkpoint, first_row in _chunks(url, job_id))

    wait_until(mid_chunk, 120, "a chunk with committed batches in flight")
    kill_group(first.proc)
    held = {seq for seq, status, *_ in _chunks(url, job_id) if status == "processing"}
    owners_before = {seq: owner for seq, _, owner, *_ in _chunks(url, job_id)}
    assert held and get_job(url, job_id)["status"] == "processing"

    procs.worker(data_dir, workers=1, env=CHUNK_ENV).start()
    wait_until(lambda: get_job(url, job_id)["status"] not in ("pending", "processing"),
               240, "the second worker to finish the job")
    job = get_job(url, job_id)
    assert {k: job[k] for k in expected["job"]} == expected["job"]
    after = {seq: owner for seq, _, owner, *_ in _chunks(url, job_id)}
    assert all(after[s] != owners_before[s] for s in held), "reclaimed by the other worker"
    assert {status for _, status, *_ in _chunks(url, job_id)} == {"done"}
    with db.connect(url, autocommit=True) as c:
        ids = {r[0] for r in c.execute("SELECT id FROM users")}
        file_ids = ids - {i for i in ids if len(i) == 36 and i.count("-") == 4}
        assert table(c, file_ids) == expected["table"]
    assert error_downloads(url, job_id) == expected["downloads"]
