-- Releases (what an app runs: an image and a machine config, numbered per app) and the
-- deployments that roll them out server-side, with a durable step log so a deployment
-- survives a restart of the control plane.

CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    image TEXT NOT NULL,
    -- The machine config (JSON) every machine of the release runs.
    config TEXT NOT NULL,
    -- pending | running | complete | failed | rolled_back
    status TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (app_id, version)
);

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    release_id TEXT NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    -- rolling | immediate
    strategy TEXT NOT NULL,
    -- A fraction of the machines (0 < x <= 1) or, when above 1, a count.
    max_unavailable DOUBLE PRECISION NOT NULL,
    wait_timeout_ms BIGINT NOT NULL,
    -- Machines to create when the app has none of the release's process group.
    initial_count BIGINT NOT NULL,
    -- running | rolling_back | succeeded | failed | rolled_back
    status TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deployments_by_app ON deployments (app_id, created_at);

CREATE TABLE deployment_steps (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    machine_id TEXT,
    -- create | update | healthy | failed | rollback | note
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    -- For `update`: the machine's config before (JSON), restored by a rollback.
    previous_config TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, number)
);
