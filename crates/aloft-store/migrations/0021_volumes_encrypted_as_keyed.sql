-- A volume is encrypted at rest exactly when it has a key. Rows from before keys may say
-- `encrypted = 1` (what their request asked): they were plain directories or filesystems.
UPDATE volumes SET encrypted = 0 WHERE key_sealed IS NULL;
