"""The only code that reads or writes a split import's plan, chunks and held records.

The tables are created by ``migrations/0006_import_chunks.sql``; every statement
is a named query of ``bulkport/sql/queries.sql``. Like
:mod:`bulkport.jobs.store`, methods take an open connection so that the caller
decides the transaction: a chunk's batch rows, its rejected and held records, the
chunk's checkpoint and the job's counters commit in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from bulkport.errors import LeaseLost
from bulkport.jobs.store import STORE, Conn, Job, _all, _one
from bulkport.pipeline.progress import BatchProgress
from bulkport.pipeline.split import ChunkWork, Plan
from bulkport.sql import QUERIES
from bulkport.status import JobStatus


@dataclass(frozen=True, slots=True)
class ChunkClaim:
    """A chunk a worker claimed: whose it is, how often it was tried, what to do."""

    job_id: str
    attempts: int
    work: ChunkWork


def _claim(row: Job) -> ChunkClaim:
    return ChunkClaim(row["job_id"], row["attempts"], ChunkWork(
        seq=row["seq"], is_tail=row["is_tail"], start_byte=row["start_byte"],
        end_byte=row["end_byte"], first_row=row["first_row"], checkpoint=row["checkpoint"],
        bytes_done=row["bytes_done"], hot=frozenset(row["hot"] or ()),
        defaults=[(int(i), str(v)) for i, v in row["defaults"]]))


class ChunkStore:
    """Plan, chunk and held-record state of split imports."""

    def plan(self, conn: Conn, job_id: str, owner: str, plan: Plan,
             defaults: Sequence[tuple[int, str]], lease_seconds: float) -> bool:
        """Store the plan and its chunks (plus the tail) in one transaction; False when
        ``owner`` no longer runs the job."""
        chunks = plan.chunks
        end = chunks[-1].end_byte
        with conn.transaction():
            if _one(conn, "insert_import_plan", {
                    "id": job_id, "owner": owner, "hot": list(plan.hot),
                    "defaults": Jsonb([list(d) for d in defaults]),
                    "header_bytes": chunks[0].start_byte,
                    "lease_seconds": lease_seconds}) is None:
                return False
            conn.execute(QUERIES["insert_import_chunks"], {
                "id": job_id, "seqs": [c.seq for c in chunks] + [len(chunks)],
                "tails": [False] * len(chunks) + [True],
                "starts": [c.start_byte for c in chunks] + [end],
                "ends": [c.end_byte for c in chunks] + [end],
                "firsts": [c.first_row for c in chunks] + [0]})
        return True

    def claim(self, conn: Conn, owner: str, lease_seconds: float, max_in_flight: int
              ) -> ChunkClaim | None:
        row = _one(conn, "claim_chunk", {"owner": owner, "lease_seconds": lease_seconds,
                                         "max_in_flight": max_in_flight})
        return _claim(row) if row is not None else None

    def renew(self, conn: Conn, job_id: str, seq: int, owner: str, lease_seconds: float
              ) -> JobStatus | None:
        row = _one(conn, "renew_chunk_lease", {"id": job_id, "seq": seq, "owner": owner,
                                               "lease_seconds": lease_seconds})
        return JobStatus(row["status"]) if row else None

    def commit_batch(self, conn: Conn, job_id: str, seq: int, owner: str,
                     batch: BatchProgress, lease_seconds: float) -> JobStatus:
        """Record a chunk's batch in the caller's transaction; :class:`LeaseLost` when
        the chunk is no longer ``owner``'s (the caller rolls the batch back)."""
        held = len(batch.held)
        chunk = _one(conn, "commit_chunk_batch", {
            "id": job_id, "seq": seq, "owner": owner, "checkpoint": batch.checkpoint,
            "bytes_done": batch.bytes_processed, "processed": batch.processed, "held": held,
            "lease_seconds": lease_seconds})
        if chunk is None:
            raise LeaseLost()
        if batch.rejected:
            STORE.write_import_errors(conn, job_id, batch.rejected)
        if batch.held:
            with conn.cursor() as cur, cur.copy(QUERIES["copy_held_records"]) as copy:
                for row, data in batch.held:
                    copy.write_row((job_id, row, data))
        rejected = len(batch.rejected)
        job = _one(conn, "add_chunk_progress", {
            "id": job_id, "processed": batch.processed,
            "successful": batch.processed - rejected, "rejected": rejected,
            "bytes": max(0, batch.bytes_processed - chunk["bytes_before"]),
            "checkpoint": batch.checkpoint, "error_counts": Jsonb(batch.error_counts),
            "lease_seconds": lease_seconds})
        if job is None:  # the job ended meanwhile (failed by another chunk's worker)
            raise LeaseLost()
        return JobStatus(job["status"])

    def held_records(self, conn: Conn, job_id: str, after_row: int, limit: int
                     ) -> list[tuple[int, bytes]]:
        rows = _all(conn, "list_held_records", {"id": job_id, "after_row": after_row,
                                                "limit": limit})
        return [(r["row"], bytes(r["data"])) for r in rows]

    def finish_chunk(self, conn: Conn, job_id: str, seq: int, owner: str) -> bool:
        return _one(conn, "finish_chunk", {"id": job_id, "seq": seq, "owner": owner}) is not None

    def release(self, conn: Conn, job_id: str, seq: int, owner: str) -> None:
        conn.execute(QUERIES["release_chunk"], {"id": job_id, "seq": seq, "owner": owner})

    def finish_job(self, conn: Conn, job_id: str, seq: int, owner: str,
                   status: JobStatus | None = None, failure_reason: str | None = None
                   ) -> Job | None:
        """End the job (its status from the counters unless given) and the chunk, in one
        transaction; None when ``owner`` no longer holds chunk ``seq`` of a running job."""
        params: dict[str, Any] = {"id": job_id, "seq": seq, "owner": owner,
                                  "status": status.value if status else None,
                                  "failure_reason": failure_reason}
        with conn.transaction():
            job = _one(conn, "finish_chunked_job", params)
            if job is None:
                return None
            conn.execute(QUERIES["finish_chunk"], params)
            conn.execute(QUERIES["drop_chunks"], params)
            conn.execute(QUERIES["delete_held_records"], params)
        return job

    def drop(self, conn: Conn, job_id: str, owner: str | None) -> None:
        """Drop the chunks of an ended job that are not done (and ``owner``'s in flight)."""
        conn.execute(QUERIES["drop_chunks"], {"id": job_id, "owner": owner})


CHUNKS = ChunkStore()
