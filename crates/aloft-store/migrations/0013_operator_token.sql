-- The operator role: the first start's token (the `personal` organization's `admin`
-- token, written to <data_dir>/admin-token) becomes the operator's, so that an existing
-- platform keeps one token that may create organizations and read the whole platform's
-- metrics once org tokens no longer may.
UPDATE tokens SET kind = 'operator'
WHERE id = (
    SELECT t.id FROM tokens t JOIN orgs o ON o.id = t.org_id
    WHERE o.slug = 'personal' AND t.name = 'admin' AND t.kind = 'org'
    ORDER BY t.created_at
    LIMIT 1
);
