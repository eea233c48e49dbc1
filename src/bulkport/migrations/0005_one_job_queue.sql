-- One queue for both kinds of job: the
-- rows of import_jobs and export_jobs move into one table `jobs`, told apart by
-- `kind`, so that claiming, renewing, releasing, finishing, cancelling and listing
-- are written once. The details of one kind are nullable columns, present on the
-- rows of that kind (the CHECKs below) and NULL on the others.
CREATE TABLE jobs (
    id                  text PRIMARY KEY,
    kind                text NOT NULL CONSTRAINT jobs_kind_check CHECK (kind IN ('import', 'export')),
    idempotency_key     text,
    fingerprint         text NOT NULL,
    request_id          text,
    resource            text NOT NULL,
    format              text,
    status              job_status NOT NULL DEFAULT 'pending',
    file_key            text,
    file_size_bytes     bigint,
    attempts            integer NOT NULL DEFAULT 0,
    owner               text,
    lease_expires_at    timestamptz,
    failure_reason      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- imports
    mode                text,
    dry_run             boolean,
    source_url          text,
    file_name           text,
    columns             jsonb,
    total_records       bigint,
    processed_records   bigint,
    successful_records  bigint,
    error_records       bigint,
    failed_batches      integer,
    error_counts        jsonb,
    checkpoint          bigint,
    bytes_processed     bigint,
    waits_for           text[],
    file_deleted_at     timestamptz,
    column_map          jsonb,
    delimiter           text,
    encoding            text,
    encoding_hint       text,
    -- exports
    fields              jsonb,
    filters             jsonb,
    record_count        bigint,
    expires_at          timestamptz,
    compression         text CONSTRAINT jobs_compression_check CHECK (compression IN ('none', 'gzip')),
    -- An Idempotency-Key names one request of one kind: the same key may be used
    -- once for an import and once for an export, as with two tables.
    CONSTRAINT jobs_idempotency_key UNIQUE (kind, idempotency_key),
    CONSTRAINT jobs_import_details CHECK (kind <> 'import' OR (
        mode IS NOT NULL AND dry_run IS NOT NULL AND processed_records IS NOT NULL
        AND successful_records IS NOT NULL AND error_records IS NOT NULL
        AND failed_batches IS NOT NULL AND error_counts IS NOT NULL
        AND checkpoint IS NOT NULL AND bytes_processed IS NOT NULL AND waits_for IS NOT NULL)),
    CONSTRAINT jobs_export_details CHECK (kind <> 'export' OR (
        format IS NOT NULL AND filters IS NOT NULL AND record_count IS NOT NULL
        AND compression IS NOT NULL))
);

INSERT INTO jobs (id, kind, idempotency_key, fingerprint, request_id, resource, format, status,
                  file_key, file_size_bytes, attempts, owner, lease_expires_at, failure_reason,
                  created_at, started_at, completed_at, updated_at,
                  mode, dry_run, source_url, file_name, columns, total_records,
                  processed_records, successful_records, error_records, failed_batches,
                  error_counts, checkpoint, bytes_processed, waits_for, file_deleted_at,
                  column_map, delimiter, encoding, encoding_hint)
SELECT id, 'import', idempotency_key, fingerprint, request_id, resource, format, status,
       file_key, file_size_bytes, attempts, owner, lease_expires_at, failure_reason,
       created_at, started_at, completed_at, updated_at,
       mode, dry_run, source_url, file_name, columns, total_records,
       processed_records, successful_records, error_records, failed_batches,
       error_counts, checkpoint, bytes_processed, waits_for, file_deleted_at,
       column_map, delimiter, encoding, encoding_hint
FROM import_jobs;

INSERT INTO jobs (id, kind, idempotency_key, fingerprint, request_id, resource, format, status,
                  file_key, file_size_bytes, attempts, owner, lease_expires_at, failure_reason,
                  created_at, started_at, completed_at, updated_at,
                  fields, filters, record_count, expires_at, compression)
SELECT id, 'export', idempotency_key, fingerprint, request_id, resource, format, status,
       file_key, file_size_bytes, attempts, owner, lease_expires_at, failure_reason,
       created_at, started_at, completed_at, updated_at,
       fields, filters, record_count, expires_at, compression
FROM export_jobs;

DROP VIEW import_job_blockers;
ALTER TABLE import_errors DROP CONSTRAINT import_errors_job_id_fkey;
DROP TABLE import_jobs;
DROP TABLE export_jobs;
ALTER TABLE import_errors
    ADD CONSTRAINT import_errors_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id)
        ON DELETE CASCADE;

-- Claiming (both kinds, oldest first) and the queue metrics read the unfinished jobs.
CREATE INDEX jobs_claim_idx ON jobs (created_at) WHERE status IN ('pending', 'processing');
-- GET /v1/imports and GET /v1/exports: newest first, per kind.
CREATE INDEX jobs_list_idx ON jobs (kind, created_at DESC, id DESC);

-- The jobs a later job of a referencing resource waits for (load order, SPEC §4):
-- real imports that are queued, running, or cancelled with their last batch still
-- in flight. A dry run writes nothing, so nothing waits for it. The claim statement
-- and the status document both read this one definition.
CREATE VIEW import_job_blockers AS
SELECT id, resource, created_at FROM jobs
WHERE kind = 'import' AND NOT dry_run
  AND (status IN ('pending', 'processing')
       OR (status = 'cancelled' AND lease_expires_at > now()));

CREATE INDEX jobs_blockers_idx ON jobs (resource, created_at)
WHERE kind = 'import' AND NOT dry_run
  AND (status IN ('pending', 'processing')
       OR (status = 'cancelled' AND lease_expires_at IS NOT NULL));

-- Ended imports whose file is still stored: what the retention sweep looks at.
CREATE INDEX jobs_stored_files_idx ON jobs (completed_at)
WHERE kind = 'import' AND file_key IS NOT NULL AND file_deleted_at IS NULL
  AND status IN ('completed', 'completed_with_errors', 'failed', 'cancelled');

-- Export files that may expire: what the export sweep looks at.
CREATE INDEX jobs_export_files_idx ON jobs (expires_at)
WHERE kind = 'export' AND file_key IS NOT NULL;

-- Compatibility views: the old table names, with their old columns, for SQL written
-- against them (dashboards, ad-hoc queries). bulkport itself reads and writes `jobs`.
-- Both are automatically updatable; an INSERT through one gets its kind and the
-- column defaults the old table had.
CREATE VIEW import_jobs AS
SELECT id, kind, idempotency_key, fingerprint, request_id, resource, format, mode, dry_run,
       status, source_url, file_key, file_name, file_size_bytes, columns, total_records,
       processed_records, successful_records, error_records, failed_batches, error_counts,
       checkpoint, bytes_processed, attempts, owner, lease_expires_at, failure_reason,
       created_at, started_at, completed_at, updated_at, waits_for, file_deleted_at,
       column_map, delimiter, encoding, encoding_hint
FROM jobs WHERE kind = 'import'
WITH LOCAL CHECK OPTION;
COMMENT ON VIEW import_jobs IS 'Compatibility view: the import rows of jobs, as the former table.';
ALTER VIEW import_jobs ALTER COLUMN kind SET DEFAULT 'import';
ALTER VIEW import_jobs ALTER COLUMN dry_run SET DEFAULT false;
ALTER VIEW import_jobs ALTER COLUMN processed_records SET DEFAULT 0;
ALTER VIEW import_jobs ALTER COLUMN successful_records SET DEFAULT 0;
ALTER VIEW import_jobs ALTER COLUMN error_records SET DEFAULT 0;
ALTER VIEW import_jobs ALTER COLUMN failed_batches SET DEFAULT 0;
ALTER VIEW import_jobs ALTER COLUMN error_counts SET DEFAULT '{}';
ALTER VIEW import_jobs ALTER COLUMN checkpoint SET DEFAULT 0;
ALTER VIEW import_jobs ALTER COLUMN bytes_processed SET DEFAULT 0;
ALTER VIEW import_jobs ALTER COLUMN waits_for SET DEFAULT '{}';

CREATE VIEW export_jobs AS
SELECT id, kind, idempotency_key, fingerprint, request_id, resource, format, fields, filters,
       status, file_key, record_count, file_size_bytes, attempts, owner, lease_expires_at,
       failure_reason, expires_at, created_at, started_at, completed_at, updated_at,
       compression
FROM jobs WHERE kind = 'export'
WITH LOCAL CHECK OPTION;
COMMENT ON VIEW export_jobs IS 'Compatibility view: the export rows of jobs, as the former table.';
ALTER VIEW export_jobs ALTER COLUMN kind SET DEFAULT 'export';
ALTER VIEW export_jobs ALTER COLUMN filters SET DEFAULT '{}';
ALTER VIEW export_jobs ALTER COLUMN record_count SET DEFAULT 0;
ALTER VIEW export_jobs ALTER COLUMN compression SET DEFAULT 'none';
