-- Several processes on one database (issue 16). A claim is a lease: the worker running a
-- job renews `lease_expires_at` (seconds since the epoch) with heartbeats; a running job
-- whose lease has expired (its process died or stalled) is re-queued by another process.
ALTER TABLE jobs ADD COLUMN lease_expires_at INTEGER;

-- A pause requested on any process, read by the worker running the job (a cancel is
-- `cancel_requested`); cleared when the job is claimed or leaves `running`.
ALTER TABLE jobs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;

-- Whether the event goes out live on streams (step updates are thinned to
-- server.stream_update_interval_ms): every process reads new events by id and broadcasts
-- the live ones to its own stream clients, whichever process wrote them.
ALTER TABLE events ADD COLUMN live INTEGER NOT NULL DEFAULT 1;
