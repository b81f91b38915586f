-- When an app of each name was last deleted. App names are free again once an app is
-- deleted, and logs are kept by app name: an app created later under the same name
-- (perhaps by another organization) reads only lines from after that deletion.
CREATE TABLE deleted_apps (
    name TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
