-- Fine-tuning jobs, their events and per-step metrics.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                    ('validating', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    name            TEXT,
    config          TEXT NOT NULL,
    spec            TEXT NOT NULL,
    output_dir      TEXT NOT NULL,
    step            INTEGER NOT NULL DEFAULT 0,
    total_steps     INTEGER,
    trained_tokens  INTEGER NOT NULL DEFAULT 0,
    latest_metrics  TEXT,
    error_code      TEXT,
    error_message   TEXT,
    error_param     TEXT,
    worker          TEXT,
    heartbeat_at    INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    resume          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status_seq ON jobs (status, seq);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    level       TEXT NOT NULL,
    type        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE metrics (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);
