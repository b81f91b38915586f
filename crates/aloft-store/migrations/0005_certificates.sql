-- Hostnames apps answer at besides <app>.<apps_domain>, each with its certificate's
-- source: 'local' (issued by the edge's local CA) or 'custom' (imported; the private key
-- sealed by the control plane, as secrets are).

CREATE TABLE certificates (
    hostname TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    fullchain TEXT,
    private_key_sealed TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX certificates_by_app ON certificates (app_id);
