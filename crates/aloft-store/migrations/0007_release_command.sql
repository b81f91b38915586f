-- A deployment's release command: run once in a temporary machine before any machine
-- changes (JSON array of words), and how long it may take.
ALTER TABLE deployments ADD COLUMN release_command TEXT;
ALTER TABLE deployments ADD COLUMN release_command_timeout_ms BIGINT;
