-- A cancel request is recorded on the job, so it wins over a later pause and over a
-- trainer that finishes meanwhile, and survives a crash.
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;

-- The step an event is about (training updates, validation, checkpoints): one event per
-- (job, type, step), so a resumed job never records a step twice.
ALTER TABLE events ADD COLUMN step INTEGER;
CREATE UNIQUE INDEX events_job_type_step ON events (job_id, type, step) WHERE step IS NOT NULL;
