-- The fly.toml a release was deployed from, as the CLI sent it (`aloft config save`
-- writes it back). Written in the transaction that records the release.
CREATE TABLE release_configs (
    release_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    fly_toml TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX release_configs_by_app ON release_configs (app_id, created_at);
