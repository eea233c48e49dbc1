-- Every fixed SQL statement of bulkport, each under a "-- name:" line.
-- Dynamic statements (per-resource loading and export) are composed with
-- psycopg.sql in bulkport/sql/loading.py and bulkport/sql/exporting.py.

-- The job queue: one table `jobs` for both kinds (migrations/0005_one_job_queue.sql).
-- Statements that differ by kind take %(kind)s.

-- name: insert_job
-- Each kind's details are given for its kind and NULL for the other; an import's
-- counters start at 0 (an export has none).
INSERT INTO jobs (id, kind, idempotency_key, fingerprint, request_id, resource, format,
                  file_key, file_size_bytes,
                  mode, dry_run, source_url, file_name, waits_for, column_map, delimiter,
                  encoding, processed_records, successful_records, error_records,
                  failed_batches, error_counts, checkpoint, bytes_processed,
                  fields, filters, compression, record_count)
SELECT %(id)s, %(kind)s, %(idempotency_key)s, %(fingerprint)s, %(request_id)s, %(resource)s,
       %(format)s, %(file_key)s, %(file_size_bytes)s,
       %(mode)s, %(dry_run)s, %(source_url)s, %(file_name)s, %(waits_for)s, %(column_map)s,
       %(delimiter)s, %(encoding)s, z, z, z, z, %(error_counts)s, z, z,
       %(fields)s, %(filters)s, %(compression)s, %(record_count)s
FROM (SELECT CASE WHEN %(kind)s = 'import' THEN 0 END AS z) AS counters
ON CONFLICT (kind, idempotency_key) DO NOTHING
RETURNING *;

-- name: get_job_by_key
SELECT * FROM jobs WHERE kind = %(kind)s AND idempotency_key = %(idempotency_key)s;

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s AND kind = %(kind)s;

-- name: list_jobs
SELECT * FROM jobs
WHERE kind = %(kind)s
  AND (%(status)s::job_status IS NULL OR status = %(status)s::job_status)
  AND (%(resource)s::text IS NULL OR resource = %(resource)s)
  AND (%(after_created)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created)s::timestamptz, %(after_id)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: get_import_status
-- What GET /v1/imports/{id} shows, in one round trip: the job and its first error
-- records as [{"row", "errors"}, ...] in row order (the records themselves stay unread).
-- first_errors is NULL when the caller already holds them: the job's version
-- (error_records, updated_at) is the one it sends (api/first_errors.py).
SELECT j.*, CASE WHEN j.error_records = %(known_records)s
                  AND j.updated_at = %(known_updated_at)s THEN NULL ELSE (
    SELECT coalesce(jsonb_agg(jsonb_build_object('row', e.row, 'errors', e.errors)
                              ORDER BY e.row), '[]'::jsonb)
    FROM (SELECT row, errors FROM import_errors WHERE job_id = j.id
          ORDER BY row LIMIT %(limit)s) e
) END AS first_errors
FROM jobs j WHERE j.id = %(id)s AND j.kind = 'import';

-- name: cancel_job
UPDATE jobs
SET status = 'cancelled', completed_at = now(), updated_at = now()
WHERE id = %(id)s AND kind = %(kind)s AND status IN ('pending', 'processing')
RETURNING *;

-- name: claim_job
-- One statement for both kinds. A pending job that waits for no earlier job of a
-- resource it references (load order, SPEC §4: the blockers are defined by the view
-- import_job_blockers; exports wait for nothing), or a processing one whose worker
-- stopped renewing its lease (it had started, so it waited already). A waiting job
-- is skipped, never blocks the jobs behind it. Jobs of %(first)s come first, oldest
-- first, then the other kind's: the worker alternates %(first)s from poll to poll,
-- so queued imports never starve exports, nor the reverse.
UPDATE jobs
SET status = 'processing', owner = %(owner)s, attempts = attempts + 1,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = (
    SELECT id FROM jobs j
    WHERE (status = 'pending'
           AND NOT EXISTS (SELECT 1 FROM import_job_blockers b
                           WHERE b.resource = ANY (j.waits_for)
                             AND b.created_at < j.created_at))
       OR (status = 'processing' AND lease_expires_at < now()
           -- A split import is finished by its chunks (claim_chunk), never rerun whole.
           AND NOT EXISTS (SELECT 1 FROM import_plans p WHERE p.job_id = j.id))
    ORDER BY kind <> %(first)s, created_at
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING *;

-- name: renew_lease
UPDATE jobs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(id)s AND owner = %(owner)s AND status = 'processing'
RETURNING status;

-- name: set_import_source
UPDATE jobs
SET format = %(format)s, columns = %(columns)s, file_key = %(file_key)s,
    file_size_bytes = %(file_size_bytes)s,
    delimiter = coalesce(%(delimiter)s, delimiter),
    encoding_hint = coalesce(%(encoding_hint)s, encoding_hint), updated_at = now()
WHERE id = %(id)s AND owner = %(owner)s;

-- name: commit_import_batch
-- Runs in the batch's transaction: when this worker no longer owns the job no
-- row is returned and the caller rolls the batch back.
-- Progress resets the attempt count: MAX_ATTEMPTS bounds claims that commit
-- nothing (a poison job), not the hand-backs and crashes of a long import.
UPDATE jobs
SET attempts = 1, checkpoint = %(checkpoint)s, bytes_processed = %(bytes_processed)s,
    processed_records = processed_records + %(processed)s,
    successful_records = successful_records + %(successful)s,
    error_records = error_records + %(rejected)s,
    failed_batches = failed_batches + %(failed_batches)s,
    error_counts = %(error_counts)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    updated_at = now()
WHERE id = %(id)s AND owner = %(owner)s AND status IN ('processing', 'cancelled')
RETURNING status;

-- name: reset_import_progress
-- A dry run cannot resume (its rows were never committed): start it over.
UPDATE jobs
SET checkpoint = 0, bytes_processed = 0, processed_records = 0, successful_records = 0,
    error_records = 0, failed_batches = 0, error_counts = '{}', updated_at = now()
WHERE id = %(id)s AND owner = %(owner)s;

-- name: delete_import_errors
DELETE FROM import_errors WHERE job_id = %(id)s;

-- name: copy_import_errors
COPY import_errors (job_id, row, record, errors) FROM STDIN;

-- name: finish_job
-- What the job produced stays as it is where NULL is given: an import's file and
-- counters are its own; an export's file facts are only known here (and stay NULL
-- for a failed export, as they were). total_records is NULL for exports.
UPDATE jobs
SET status = %(status)s::job_status, total_records = processed_records,
    record_count = coalesce(%(record_count)s, record_count),
    file_key = coalesce(%(file_key)s, file_key),
    file_size_bytes = coalesce(%(file_size_bytes)s, file_size_bytes),
    expires_at = coalesce(%(expires_at)s, expires_at),
    failure_reason = %(failure_reason)s, completed_at = now(), updated_at = now(),
    lease_expires_at = NULL
WHERE id = %(id)s AND owner = %(owner)s AND status = 'processing'
RETURNING *;

-- name: release_job
-- Graceful stop: hand the job back so another worker resumes it at once.
UPDATE jobs
SET status = 'pending', owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND owner = %(owner)s AND status = 'processing';

-- name: end_cancelled_job
-- The worker of a job cancelled while it ran committed its last batch: the job
-- no longer holds back the jobs waiting for it, and its file may go.
UPDATE jobs SET lease_expires_at = NULL
WHERE id = %(id)s AND owner = %(owner)s AND status = 'cancelled';

-- name: import_waiting_for
-- For the pending jobs among %(ids)s, the earlier jobs each one waits for (the
-- status document's waiting_for), oldest first.
SELECT j.id, array_agg(b.id ORDER BY b.created_at, b.id) AS waiting_for
FROM jobs j
JOIN import_job_blockers b ON b.resource = ANY (j.waits_for) AND b.created_at < j.created_at
WHERE j.id = ANY (%(ids)s) AND j.status = 'pending'
GROUP BY j.id;

-- name: list_import_errors
SELECT row, record, errors FROM import_errors
WHERE job_id = %(id)s AND row > %(after_row)s
ORDER BY row
LIMIT %(limit)s;

-- name: list_import_errors_with_code
-- The rejected records with at least one error of a code: %(code)s is a jsonb
-- array like [{"code": "invalid_role"}], matched by containment.
SELECT row, record, errors FROM import_errors
WHERE job_id = %(id)s AND row > %(after_row)s AND errors @> %(code)s::jsonb
ORDER BY row
LIMIT %(limit)s;

-- name: list_expired_exports
-- Export files past their expiry, still stored: the sweeper deletes them. Locked,
-- so that two instances sweeping at once never take the same rows.
SELECT id, file_key FROM jobs
WHERE kind = 'export' AND expires_at < now() AND file_key IS NOT NULL
ORDER BY expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: forget_export_file
UPDATE jobs SET file_key = NULL, updated_at = now()
WHERE id = %(id)s AND file_key = %(file_key)s;

-- name: list_expired_uploads
-- Files of ended imports kept longer than the retention: the sweeper deletes them.
-- Locked, so that two instances sweeping at once never take the same rows. A job
-- cancelled with its last batch in flight still holds a lease: its file stays.
SELECT id, file_key FROM jobs
WHERE kind = 'import' AND file_key IS NOT NULL AND file_deleted_at IS NULL
  AND status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
  AND completed_at <= now() - make_interval(secs => %(retention_seconds)s)
  AND (lease_expires_at IS NULL OR lease_expires_at < now())
ORDER BY completed_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: forget_upload_file
UPDATE jobs SET file_deleted_at = now(), updated_at = now()
WHERE id = %(id)s AND file_key = %(file_key)s;

-- Split imports (migrations/0006_import_chunks.sql, docs/imports.md "Chunked imports").

-- name: insert_import_plan
-- Only while the planning worker still owns the job; the job's lease now bounds the
-- life of a cancelled job's last batches (extended by every chunk batch). The bytes
-- before the first chunk (a CSV header) count as processed.
WITH job AS (
    UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
                    bytes_processed = %(header_bytes)s, updated_at = now()
    WHERE id = %(id)s AND owner = %(owner)s AND status = 'processing'
    RETURNING id
)
INSERT INTO import_plans (job_id, hot, defaults)
SELECT id, %(hot)s, %(defaults)s FROM job
RETURNING job_id;

-- name: insert_import_chunks
INSERT INTO import_chunks (job_id, seq, is_tail, start_byte, end_byte, first_row, checkpoint)
SELECT %(id)s, u.seq, u.is_tail, u.start_byte, u.end_byte, u.first_row, u.first_row
FROM unnest(%(seqs)s::int[], %(tails)s::bool[], %(starts)s::bigint[], %(ends)s::bigint[],
            %(firsts)s::bigint[]) AS u(seq, is_tail, start_byte, end_byte, first_row);

-- name: claim_chunk
-- The next chunk of a running split import: pending, or held by a worker whose lease
-- expired; the tail only once every other chunk is done; at most
-- %(max_in_flight)s chunks of a job leased at once (counted at claim time: two claims
-- of the same instant may both see room for one). Oldest job first, then by seq.
UPDATE import_chunks c
SET status = 'processing', owner = %(owner)s, attempts = c.attempts + 1,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM (
    SELECT o.job_id, o.seq FROM import_chunks o JOIN jobs j ON j.id = o.job_id
    WHERE j.status = 'processing'
      AND (o.status = 'pending' OR (o.status = 'processing' AND o.lease_expires_at < now()))
      AND (NOT o.is_tail OR NOT EXISTS (
          SELECT 1 FROM import_chunks d
          WHERE d.job_id = o.job_id AND NOT d.is_tail AND d.status IN ('pending', 'processing')))
      AND (SELECT count(*) FROM import_chunks f
           WHERE f.job_id = o.job_id AND f.status = 'processing'
             AND f.lease_expires_at >= now()) < %(max_in_flight)s
    ORDER BY j.created_at, o.seq
    FOR UPDATE OF o SKIP LOCKED
    LIMIT 1
) pick
WHERE c.job_id = pick.job_id AND c.seq = pick.seq
RETURNING c.*, (SELECT p.hot FROM import_plans p WHERE p.job_id = c.job_id) AS hot,
          (SELECT p.defaults FROM import_plans p WHERE p.job_id = c.job_id) AS defaults;

-- name: renew_chunk_lease
-- No row once the chunk is no longer %(owner)s's or its job no longer runs (cancelled).
UPDATE import_chunks c
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM jobs j
WHERE c.job_id = %(id)s AND c.seq = %(seq)s AND c.owner = %(owner)s
  AND c.status = 'processing' AND j.id = c.job_id AND j.status = 'processing'
RETURNING j.status;

-- name: commit_chunk_batch
-- In the batch's transaction, guarded by the chunk's owner: no row, the caller rolls
-- the batch back. Returns the bytes the chunk had done before, for the job's total.
UPDATE import_chunks c
SET checkpoint = %(checkpoint)s, bytes_done = %(bytes_done)s,
    processed = c.processed + %(processed)s, held = c.held + %(held)s, attempts = 1,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM (SELECT bytes_done FROM import_chunks
      WHERE job_id = %(id)s AND seq = %(seq)s FOR UPDATE) AS before
WHERE c.job_id = %(id)s AND c.seq = %(seq)s AND c.owner = %(owner)s
  AND c.status = 'processing'
RETURNING before.bytes_done AS bytes_before;

-- name: add_chunk_progress
-- A chunk batch's counters added to its job's (error counts merged key by key); the
-- job's checkpoint is the furthest row committed, its lease outlives the last batch.
UPDATE jobs
SET processed_records = processed_records + %(processed)s,
    successful_records = successful_records + %(successful)s,
    error_records = error_records + %(rejected)s,
    bytes_processed = bytes_processed + %(bytes)s,
    checkpoint = greatest(checkpoint, %(checkpoint)s),
    error_counts = (SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb)
                    FROM (SELECT k, sum(v::bigint) AS n
                          FROM (SELECT key, value FROM jsonb_each_text(error_counts)
                                UNION ALL
                                SELECT key, value FROM jsonb_each_text(%(error_counts)s))
                               AS e(k, v)
                          GROUP BY k) AS merged),
    lease_expires_at = greatest(lease_expires_at,
                                now() + make_interval(secs => %(lease_seconds)s)),
    updated_at = now()
WHERE id = %(id)s AND status IN ('processing', 'cancelled')
RETURNING status;

-- name: copy_held_records
COPY held_records (job_id, row, data) FROM STDIN;

-- name: list_held_records
SELECT row, data FROM held_records
WHERE job_id = %(id)s AND row > %(after_row)s
ORDER BY row
LIMIT %(limit)s;

-- name: finish_chunk
UPDATE import_chunks SET status = 'done', lease_expires_at = NULL
WHERE job_id = %(id)s AND seq = %(seq)s AND owner = %(owner)s AND status = 'processing'
RETURNING seq;

-- name: release_chunk
-- Graceful stop: another worker resumes the chunk at once, after its checkpoint.
UPDATE import_chunks SET status = 'pending', owner = NULL, lease_expires_at = NULL
WHERE job_id = %(id)s AND seq = %(seq)s AND owner = %(owner)s AND status = 'processing';

-- name: finish_chunked_job
-- The tail's end (or a chunk's failure, %(status)s = 'failed'): the job's status from
-- its aggregated counters, while %(owner)s holds chunk %(seq)s of it.
UPDATE jobs
SET status = CASE WHEN %(status)s::job_status IS NOT NULL THEN %(status)s::job_status
                  WHEN processed_records = 0 THEN 'failed'::job_status
                  WHEN error_records > 0 THEN 'completed_with_errors'::job_status
                  ELSE 'completed'::job_status END,
    failure_reason = CASE WHEN %(status)s::job_status IS NOT NULL THEN %(failure_reason)s
                          WHEN processed_records = 0 THEN 'the file holds no records' END,
    total_records = processed_records, completed_at = now(), updated_at = now(),
    lease_expires_at = NULL
WHERE id = %(id)s AND status = 'processing'
  AND EXISTS (SELECT 1 FROM import_chunks c
              WHERE c.job_id = %(id)s AND c.seq = %(seq)s AND c.owner = %(owner)s
                AND c.status = 'processing')
RETURNING *;

-- name: delete_held_records
DELETE FROM held_records WHERE job_id = %(id)s;

-- name: drop_chunks
-- The job ended (cancelled, failed): its chunks not done never run. A chunk still
-- held by a worker is dropped by that worker once its batch in flight is in.
UPDATE import_chunks SET status = 'dropped', lease_expires_at = NULL
WHERE job_id = %(id)s
  AND (status = 'pending' OR (status = 'processing' AND owner = %(owner)s))
  AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = %(id)s
              AND j.status IN ('cancelled', 'failed', 'completed', 'completed_with_errors'));

-- name: health_check
SELECT 1;

-- name: queue_stats
-- Unfinished jobs for /metrics (served by the partial claim index): per kind, resource
-- and status, the count, the age of the oldest, the time since the least recently
-- updated one changed, and how many hold an expired lease (their worker is gone).
SELECT kind AS type, resource, status::text AS status, count(*) AS jobs,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_seconds,
       extract(epoch FROM now() - min(updated_at))::float8 AS idle_seconds,
       count(*) FILTER (WHERE lease_expires_at < now()) AS expired_leases
FROM jobs WHERE status IN ('pending', 'processing')
GROUP BY kind, resource, status;

-- The rate limit's shared buckets (migrations/0007_rate_limit_buckets.sql, api/shared_limit.py).

-- name: lease_rate_tokens
-- Take up to %(want)s whole tokens from a caller's bucket in one statement: refill it
-- for the time since it was last leased from (%(rate)s tokens a second, at most
-- %(capacity)s), hand out what it holds up to %(want)s, keep the rest. A new caller
-- starts with a full bucket. ON CONFLICT DO UPDATE locks the row and reads its latest
-- version, so leases of several instances at once never hand out a token twice.
-- The time is the database's: the instances' clocks do not matter.
INSERT INTO rate_limit_buckets AS b (caller, tokens, granted, updated_at)
VALUES (%(caller)s,
        %(capacity)s::float8 - least(%(want)s::int, floor(%(capacity)s::float8)),
        least(%(want)s::int, floor(%(capacity)s::float8)),
        clock_timestamp())
ON CONFLICT (caller) DO UPDATE SET
    -- Every expression below reads the row as it was (b), none the values being set.
    granted = least(%(want)s::int, floor(least(%(capacity)s::float8, b.tokens
                  + greatest(0, extract(epoch FROM excluded.updated_at - b.updated_at))
                    * %(rate)s::float8))),
    tokens = least(%(capacity)s::float8, b.tokens
                 + greatest(0, extract(epoch FROM excluded.updated_at - b.updated_at))
                   * %(rate)s::float8)
             - least(%(want)s::int, floor(least(%(capacity)s::float8, b.tokens
                 + greatest(0, extract(epoch FROM excluded.updated_at - b.updated_at))
                   * %(rate)s::float8))),
    -- A lease that waited for the row lock may carry an earlier time: never go back.
    updated_at = greatest(b.updated_at, excluded.updated_at)
RETURNING granted, tokens;

-- name: sweep_rate_buckets
-- Forget the buckets that have refilled completely (untouched for the %(full_seconds)s
-- an empty bucket takes to fill): a missing row is a full bucket.
DELETE FROM rate_limit_buckets
WHERE updated_at < clock_timestamp() - make_interval(secs => %(full_seconds)s::float8);

-- name: lock_migrations
-- Serialises migrations of instances starting together (db.migrate).
SELECT pg_advisory_lock(%(key)s);

-- name: unlock_migrations
SELECT pg_advisory_unlock(%(key)s);

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version) VALUES (%(version)s);

-- name: commit
COMMIT;
