-- A deployment's smoke checks: how long each new machine must keep running without an
-- exit before it counts as started (0: no smoke checks). flyctl's default is 10 seconds.
ALTER TABLE deployments ADD COLUMN smoke_check_ms BIGINT NOT NULL DEFAULT 10000;
