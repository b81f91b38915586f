-- The release command machine's guest (`[deploy.release_command_vm]`, JSON); NULL: the
-- release's own.
ALTER TABLE deployments ADD COLUMN release_command_guest TEXT;
