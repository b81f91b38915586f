-- Numbers of the private network's addresses (aloft-net): fdaa | network | host | machine.

CREATE TABLE networks (
    number BIGINT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

ALTER TABLE hosts ADD COLUMN number BIGINT;
CREATE UNIQUE INDEX hosts_by_number ON hosts (number);

ALTER TABLE machines ADD COLUMN number BIGINT;
CREATE UNIQUE INDEX machines_by_host_number ON machines (host_id, number);
