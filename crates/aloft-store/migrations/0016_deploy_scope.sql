-- Which machines of its group a deployment changes (`--only-machines`, `--regions`), as
-- JSON; NULL: the whole group.
ALTER TABLE deployments ADD COLUMN scope TEXT;
