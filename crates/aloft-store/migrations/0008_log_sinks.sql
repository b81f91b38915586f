-- Where an organization's (or one app's) log lines are shipped. Headers (which may hold
-- credentials) are stored sealed with the secrets key.
CREATE TABLE log_sinks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- NULL: every app of the organization.
    app_id TEXT REFERENCES apps (id) ON DELETE CASCADE,
    -- http | loki | syslog
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    headers_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX log_sinks_by_org ON log_sinks (org_id);
