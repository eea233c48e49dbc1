-- The rate limit's token buckets, shared by every instance on this database
-- (api/shared_limit.py): one row per caller (an API key id or a client address).
-- A row holds the tokens left when it was last leased from; tokens come back at the
-- configured rate, computed from updated_at when the row is next leased from, so
-- nothing writes a row between requests.
--
-- UNLOGGED: the buckets are transient (a bucket lost in a crash or a failover
-- comes back full, as after a restart of one process), and leasing a block of
-- tokens then writes no WAL. A row that has refilled completely says nothing that
-- a missing row does not; the API deletes those (sweep_rate_buckets), so the table
-- holds only the callers of the last refill period.
CREATE UNLOGGED TABLE rate_limit_buckets (
    caller      text PRIMARY KEY,
    -- Tokens left after the last lease (0 <= tokens <= the burst).
    tokens      double precision NOT NULL,
    -- Tokens the last lease handed out: RETURNING cannot show the row before the update.
    granted     integer NOT NULL,
    updated_at  timestamptz NOT NULL
);
