-- Resources (SPEC §1). Ids are opaque text, not uuid: prefixed ids must round-trip.
CREATE TABLE users (
    id          text PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL,
    role        text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_role_idx ON users (role);
CREATE INDEX users_created_at_idx ON users (created_at);
CREATE INDEX users_updated_at_idx ON users (updated_at);

CREATE TABLE articles (
    id            text PRIMARY KEY,
    slug          text NOT NULL UNIQUE,
    title         text NOT NULL,
    description   text,
    body          text NOT NULL,
    author_id     text NOT NULL REFERENCES users (id),
    tags          text[] NOT NULL DEFAULT '{}',
    published_at  timestamptz,
    status        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX articles_author_id_idx ON articles (author_id);
CREATE INDEX articles_status_idx ON articles (status);
CREATE INDEX articles_tags_idx ON articles USING gin (tags);
CREATE INDEX articles_created_at_idx ON articles (created_at);
CREATE INDEX articles_updated_at_idx ON articles (updated_at);

CREATE TABLE comments (
    id          text PRIMARY KEY,
    body        text NOT NULL,
    article_id  text NOT NULL REFERENCES articles (id),
    user_id     text NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_article_id_idx ON comments (article_id);
CREATE INDEX comments_user_id_idx ON comments (user_id);
CREATE INDEX comments_created_at_idx ON comments (created_at);

-- Jobs (SPEC §1, §4). Mirrors bulkport.jobs.status.JobStatus.
CREATE TYPE job_status AS ENUM (
    'pending', 'processing', 'completed', 'completed_with_errors', 'failed', 'cancelled'
);

CREATE TABLE import_jobs (
    id                  text PRIMARY KEY,
    idempotency_key     text UNIQUE,
    fingerprint         text NOT NULL,
    request_id          text,
    resource            text NOT NULL,
    format              text,
    mode                text NOT NULL,
    dry_run             boolean NOT NULL DEFAULT false,
    status              job_status NOT NULL DEFAULT 'pending',
    source_url          text,
    file_key            text,
    file_name           text,
    file_size_bytes     bigint,
    columns             jsonb,
    total_records       bigint,
    processed_records   bigint NOT NULL DEFAULT 0,
    successful_records  bigint NOT NULL DEFAULT 0,
    error_records       bigint NOT NULL DEFAULT 0,
    failed_batches      integer NOT NULL DEFAULT 0,
    error_counts        jsonb NOT NULL DEFAULT '{}',
    checkpoint          bigint NOT NULL DEFAULT 0,
    bytes_processed     bigint NOT NULL DEFAULT 0,
    attempts            integer NOT NULL DEFAULT 0,
    owner               text,
    lease_expires_at    timestamptz,
    failure_reason      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_jobs_claim_idx ON import_jobs (created_at) WHERE status IN ('pending', 'processing');
CREATE INDEX import_jobs_list_idx ON import_jobs (created_at DESC, id DESC);

-- One row per rejected record: never held in memory, never capped.
CREATE TABLE import_errors (
    job_id  text NOT NULL REFERENCES import_jobs (id) ON DELETE CASCADE,
    row     bigint NOT NULL,
    record  jsonb,
    errors  jsonb NOT NULL,
    PRIMARY KEY (job_id, row)
);

CREATE TABLE export_jobs (
    id                  text PRIMARY KEY,
    idempotency_key     text UNIQUE,
    fingerprint         text NOT NULL,
    request_id          text,
    resource            text NOT NULL,
    format              text NOT NULL,
    fields              jsonb,
    filters             jsonb NOT NULL DEFAULT '{}',
    status              job_status NOT NULL DEFAULT 'pending',
    file_key            text,
    record_count        bigint NOT NULL DEFAULT 0,
    file_size_bytes     bigint,
    attempts            integer NOT NULL DEFAULT 0,
    owner               text,
    lease_expires_at    timestamptz,
    failure_reason      text,
    expires_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX export_jobs_claim_idx ON export_jobs (created_at) WHERE status IN ('pending', 'processing');
CREATE INDEX export_jobs_list_idx ON export_jobs (created_at DESC, id DESC);
