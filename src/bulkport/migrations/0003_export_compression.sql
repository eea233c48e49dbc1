-- Export jobs may store their file gzipped ("compression": "gzip" in POST /v1/exports).
ALTER TABLE export_jobs
    ADD COLUMN compression text NOT NULL DEFAULT 'none'
        CONSTRAINT export_jobs_compression_check CHECK (compression IN ('none', 'gzip'));
