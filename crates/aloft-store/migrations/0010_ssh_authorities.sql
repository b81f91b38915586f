-- Each organization's SSH certificate authority (ed25519). The private key is stored
-- sealed with the secrets key; the public key is what machines' SSH servers trust.
CREATE TABLE ssh_authorities (
    org_id TEXT PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    public_key TEXT NOT NULL,
    private_key_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
