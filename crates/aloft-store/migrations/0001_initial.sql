-- Aloft's desired state. Portable SQL: the same statements run on SQLite and PostgreSQL.
-- Times are milliseconds since the Unix epoch; JSON documents are TEXT; flags are BIGINT 0/1
-- (sqlx's Any driver reads no SQLite BOOLEAN).

CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    app_name TEXT,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    network TEXT NOT NULL,
    secrets_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    cpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    address TEXT,
    last_heartbeat BIGINT NOT NULL
);

CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    host_id TEXT,
    state TEXT NOT NULL,
    desired TEXT NOT NULL,
    version BIGINT NOT NULL,
    instance_id TEXT NOT NULL,
    private_ip TEXT,
    config TEXT NOT NULL,
    cordoned BIGINT NOT NULL DEFAULT 0,
    event_seq BIGINT NOT NULL DEFAULT 0,
    lease_nonce TEXT,
    lease_owner TEXT,
    lease_description TEXT,
    lease_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (app_id, name)
);
CREATE INDEX machines_by_app ON machines (app_id, created_at);
CREATE INDEX machines_by_host ON machines (host_id);

CREATE TABLE machine_versions (
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    instance_id TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (machine_id, version)
);

CREATE TABLE machine_events (
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    request TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (machine_id, seq)
);

CREATE TABLE secrets (
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    digest TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, name)
);

CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    host_id TEXT,
    size_gb BIGINT NOT NULL,
    state TEXT NOT NULL,
    attached_machine_id TEXT,
    encrypted BIGINT NOT NULL,
    snapshot_retention BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX volumes_by_app ON volumes (app_id);
