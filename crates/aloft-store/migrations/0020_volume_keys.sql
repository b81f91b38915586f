-- A volume's encryption key (64 random bytes, hex), sealed with the secrets key as a
-- secret's value is: NULL for a volume that is not encrypted at rest.
ALTER TABLE volumes ADD COLUMN key_sealed TEXT;
-- Whether the host can encrypt volumes at rest (its agent says so in its heartbeat).
ALTER TABLE hosts ADD COLUMN encrypts_volumes BIGINT NOT NULL DEFAULT 0;
