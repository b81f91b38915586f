-- Public addresses of apps: each app's own IPv4 addresses, from the operator's pool.

CREATE TABLE ip_addresses (
    address TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- 'v4' (dedicated IPv4).
    kind TEXT NOT NULL,
    region TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ip_addresses_by_app ON ip_addresses (app_id);
