-- The latest result of each health check of a machine's current run (agents write them).

CREATE TABLE machine_checks (
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- The index in the machine's `services` of the check's service; NULL for a top-level check.
    service BIGINT,
    status TEXT NOT NULL,
    output TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (machine_id, name)
);
