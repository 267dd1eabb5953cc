-- Bumped by every statement that writes nss_users (the replicator's or anyone's): the
-- replicator trusts its in-memory copy of the table only while the version is the one its own
-- last commit left, and reads the table again otherwise.
CREATE TABLE IF NOT EXISTS nss_users_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint NOT NULL DEFAULT 0
);
INSERT INTO nss_users_version (singleton, version) VALUES (true, 0) ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION nss_users_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE nss_users_version SET version = version + 1;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS nss_users_bump_version ON nss_users;
CREATE TRIGGER nss_users_bump_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON nss_users
    FOR EACH STATEMENT EXECUTE FUNCTION nss_users_bump_version();
