-- A host's state as its operator sets it (`up`, `cordoned`, `draining`), and when the
-- control plane declared it down (it missed its heartbeats); a heartbeat clears that.
ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'up';
ALTER TABLE hosts ADD COLUMN down_at BIGINT;
