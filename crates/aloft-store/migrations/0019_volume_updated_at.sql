-- When a volume last changed (milliseconds since the epoch), for Fly's organization-wide
-- volume list (`updated_after`, oldest change first). 0: not changed since this column
-- came; read as its creation.
ALTER TABLE volumes ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
