-- A volume's snapshots: archives of its files kept on the volume's host. A row is written
-- (status 'creating') before the host is asked, so a crash leaves a row to finish or mark
-- failed, never an archive nobody knows of.
CREATE TABLE volume_snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    host_id TEXT,
    status TEXT NOT NULL,
    size BIGINT NOT NULL,
    volume_size BIGINT NOT NULL,
    digest TEXT NOT NULL,
    retention_days BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX volume_snapshots_by_volume ON volume_snapshots (volume_id, created_at);
-- Daily snapshots on (1, Fly's default) or off (0): Fly's auto_backup_enabled, flyctl's
-- --scheduled-snapshots.
ALTER TABLE volumes ADD COLUMN auto_backup_enabled BIGINT NOT NULL DEFAULT 1;
