-- libnss-pgsql2 reads a 4th column from its group queries (the members as an array) and
-- crashes the calling process when it is missing, so the group view carries it.
CREATE OR REPLACE VIEW nss_group AS
    SELECT g.gid,
           COALESCE((SELECT p.username FROM nss_users p WHERE p.system_uid = g.gid AND p.is_active), 'fleet' || g.gid) AS groupname,
           'x'::text AS passwd,
           ARRAY(SELECT m.username FROM nss_users m WHERE m.system_gid = g.gid AND m.is_active ORDER BY m.username) AS members
    FROM (SELECT DISTINCT system_gid AS gid FROM nss_users WHERE is_active) g;
