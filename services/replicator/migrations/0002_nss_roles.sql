-- Least privilege for the NSS module: every process on the host reads nss-pgsql.conf, so the
-- role in it can read names, uids and groups but never a hash. The root-only
-- nss-pgsql-root.conf uses the shadow role. Both start NOLOGIN; the operator enables them with
-- ALTER ROLE ... LOGIN PASSWORD '...'. Roles are cluster-wide, so they may already exist
-- (another database of the cluster, or a concurrent migration); a replicator account without
-- CREATEROLE skips creating them and the operator creates them by hand.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['fleetwatch_nss', 'fleetwatch_nss_shadow'] LOOP
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            END IF;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role %: create it by hand', r;
        END;
    END LOOP;
    REVOKE ALL ON nss_users FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetwatch_nss') THEN
        GRANT SELECT ON nss_passwd, nss_group, nss_group_members TO fleetwatch_nss;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetwatch_nss_shadow') THEN
        GRANT SELECT ON nss_passwd, nss_group, nss_group_members, nss_shadow TO fleetwatch_nss_shadow;
    END IF;
END
$$;
