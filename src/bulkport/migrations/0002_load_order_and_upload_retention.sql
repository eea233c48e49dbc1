-- Load order (SPEC §4): an import job waits for the earlier-submitted jobs of the
-- resources it references. The API stores those resources with the job, so the
-- claim statement needs no knowledge of the resource graph. Jobs created before
-- this migration have none: they wait for nothing.
ALTER TABLE import_jobs ADD COLUMN waits_for text[] NOT NULL DEFAULT '{}';

-- Upload retention (SPEC §5): when the uploaded (or downloaded) file of an ended
-- job was deleted. file_key is kept, so the job still tells which file it read.
ALTER TABLE import_jobs ADD COLUMN file_deleted_at timestamptz;

-- Leases of cancelled jobs used to be left to expire. A cancelled job whose
-- batch in flight is still being committed now holds a live lease (its worker
-- clears it when the batch is done), so expired ones are cleared once here.
UPDATE import_jobs SET lease_expires_at = NULL
WHERE status = 'cancelled' AND lease_expires_at IS NOT NULL AND lease_expires_at < now();

-- The jobs a later job of a referencing resource waits for: real imports that
-- are queued, running, or cancelled with their last batch still in flight. A dry
-- run writes nothing, so nothing waits for it. The claim statement and the
-- status document both read this one definition.
CREATE VIEW import_job_blockers AS
SELECT id, resource, created_at FROM import_jobs
WHERE NOT dry_run
  AND (status IN ('pending', 'processing')
       OR (status = 'cancelled' AND lease_expires_at > now()));

CREATE INDEX import_jobs_blockers_idx ON import_jobs (resource, created_at)
WHERE NOT dry_run
  AND (status IN ('pending', 'processing')
       OR (status = 'cancelled' AND lease_expires_at IS NOT NULL));

-- Ended jobs whose file is still stored: what the retention sweep looks at.
CREATE INDEX import_jobs_stored_files_idx ON import_jobs (completed_at)
WHERE file_key IS NOT NULL AND file_deleted_at IS NULL
  AND status IN ('completed', 'completed_with_errors', 'failed', 'cancelled');
