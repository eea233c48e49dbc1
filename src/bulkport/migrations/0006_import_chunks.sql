-- A large import cut into chunks that any worker may claim (docs/imports.md,
-- "Chunked imports"). The plan is made once, by the worker that claimed the job, and
-- inserted with its chunks in one transaction; from then on the job's progress is
-- the sum of its chunks' committed batches.
CREATE TABLE import_plans (
    job_id      text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    -- 64-bit hashes of the ids and natural keys found in more than one chunk: records
    -- carrying one are held back and loaded in file order by the tail.
    hot         bigint[] NOT NULL,
    -- The insert defaults evaluated once for the whole job: [[field index, COPY text]].
    defaults    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per byte range of the file, plus one tail row (is_tail) that loads the held
-- records once every range is done. Leased like jobs.
CREATE TABLE import_chunks (
    job_id            text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq               integer NOT NULL,
    is_tail           boolean NOT NULL DEFAULT false,
    start_byte        bigint NOT NULL,
    end_byte          bigint NOT NULL,
    -- Row number of the chunk's first record, minus one.
    first_row         bigint NOT NULL,
    -- dropped: never to run, its job ended (cancelled or failed) before it was done.
    status            text NOT NULL DEFAULT 'pending'
        CONSTRAINT import_chunks_status_check
        CHECK (status IN ('pending', 'processing', 'done', 'dropped')),
    owner             text,
    lease_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    -- The last row committed (absolute row number; the tail: of the held records).
    checkpoint        bigint NOT NULL,
    bytes_done        bigint NOT NULL DEFAULT 0,
    processed         bigint NOT NULL DEFAULT 0,
    held              bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);

-- Claiming looks at the unfinished chunks only.
CREATE INDEX import_chunks_open_idx ON import_chunks (job_id, seq)
    WHERE status IN ('pending', 'processing');

-- Records held back by their chunk (raw record as JSON), committed with the chunk's
-- batch; the tail reads them in row order.
CREATE TABLE held_records (
    job_id  text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    row     bigint NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (job_id, row)
);
