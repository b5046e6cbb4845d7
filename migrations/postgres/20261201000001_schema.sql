-- The job service's schema on PostgreSQL: the same tables and columns as the SQLite
-- migrations (migrations/sqlite) reach, in one step. Times are seconds since the epoch;
-- flags are 0/1 integers as on SQLite, so both backends read rows into the same types.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN
                      ('validating', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    name              TEXT,
    config            TEXT NOT NULL,
    spec              TEXT NOT NULL,
    output_dir        TEXT NOT NULL,
    step              BIGINT NOT NULL DEFAULT 0,
    total_steps       BIGINT,
    trained_tokens    BIGINT NOT NULL DEFAULT 0,
    latest_metrics    TEXT,
    error_code        TEXT,
    error_message     TEXT,
    error_param       TEXT,
    worker            TEXT,
    heartbeat_at      BIGINT,
    started_at        BIGINT,
    finished_at       BIGINT,
    resume            BIGINT NOT NULL DEFAULT 0,
    metadata          TEXT,
    cancel_requested  BIGINT NOT NULL DEFAULT 0,
    lease_expires_at  BIGINT,
    pause_requested   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status_seq ON jobs (status, seq);

-- Event ids are handed out under a transaction-scoped advisory lock (db/postgres/events.rs),
-- so they become visible in id order, as SQLite's serialized writers make them.
CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    level       TEXT NOT NULL,
    type        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT,
    step        BIGINT,
    live        BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX events_job ON events (job_id, id);
CREATE UNIQUE INDEX events_job_type_step ON events (job_id, type, step) WHERE step IS NOT NULL;

CREATE TABLE metrics (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step    BIGINT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);

CREATE TABLE models (
    id            TEXT PRIMARY KEY,
    created_at    BIGINT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('base', 'fine_tuned')),
    source        TEXT NOT NULL,
    path          TEXT,
    base_model    TEXT,
    job_id        TEXT,
    checkpoint    TEXT,
    train_loss    DOUBLE PRECISION,
    valid_loss    DOUBLE PRECISION,
    adapter_path  TEXT,
    fused_path    TEXT
);
CREATE INDEX models_job ON models (job_id);

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    created_at  BIGINT NOT NULL,
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    records     BIGINT NOT NULL,
    path        TEXT NOT NULL
);
