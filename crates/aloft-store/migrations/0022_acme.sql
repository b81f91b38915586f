-- Certificates from an ACME directory (Let's Encrypt, or Pebble in tests). `acme` is the
-- hostname's ACME state as JSON (NULL: none was asked for): its status, the served chain
-- and its validity, the challenge the edge answers while an order waits, the attempts
-- and their errors. The issued certificate's private key is sealed with the secrets key,
-- as an imported one's is.
ALTER TABLE certificates ADD COLUMN acme TEXT;
ALTER TABLE certificates ADD COLUMN acme_key_sealed TEXT;
ALTER TABLE certificates ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
-- One ACME account per directory: its credentials (the account's private key and URL),
-- sealed with the secrets key.
CREATE TABLE acme_accounts (
    directory TEXT PRIMARY KEY,
    credentials_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
