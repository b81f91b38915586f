-- A certificate authority (PEM) a sink's collector is checked against, besides the
-- public ones.
ALTER TABLE log_sinks ADD COLUMN ca_pem TEXT;
