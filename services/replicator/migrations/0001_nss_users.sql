-- This host's copy of the central users that are active, written only by the replicator.
-- `id` is the central users.id, so a rename is an update, not a delete + insert.
-- username and uid are unique only at commit (DEFERRABLE), so one sync can move a name or a
-- uid from one account to another inside its single transaction.
CREATE TABLE IF NOT EXISTS nss_users (
    id            bigint PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL DEFAULT '',
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    is_active     boolean NOT NULL DEFAULT true,
    system_uid    integer NOT NULL CHECK (system_uid >= 1000),
    system_gid    integer NOT NULL CHECK (system_gid >= 1000),
    created_at    timestamptz NOT NULL,
    shell         text NOT NULL,
    home          text NOT NULL,
    replicated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT nss_users_username_key UNIQUE (username) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nss_users_uid_key UNIQUE (system_uid) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX IF NOT EXISTS nss_users_gid_idx ON nss_users (system_gid);

-- What libnss-pgsql2 reads (queries in infra/nss/). Column order is the module's:
-- passwd: name, passwd, gecos, dir, shell, uid, gid. The hash is never in this view.
CREATE OR REPLACE VIEW nss_passwd AS
    SELECT username, 'x'::text AS passwd, ''::text AS gecos, home AS homedir, shell,
           system_uid AS uid, system_gid AS gid
    FROM nss_users WHERE is_active;

-- One group per primary gid in use: named after the user whose uid equals it (user private
-- group), otherwise "fleet<gid>". Membership is by primary gid only.
CREATE OR REPLACE VIEW nss_group AS
    SELECT g.gid,
           COALESCE((SELECT p.username FROM nss_users p WHERE p.system_uid = g.gid AND p.is_active), 'fleet' || g.gid) AS groupname,
           'x'::text AS passwd
    FROM (SELECT DISTINCT system_gid AS gid FROM nss_users WHERE is_active) g;

CREATE OR REPLACE VIEW nss_group_members AS
    SELECT username, system_gid AS gid FROM nss_users WHERE is_active;

-- shadow: name, passwd, lstchg (days since 1970), min, max, warn, inact, expire, flag.
-- lstchg must not be 0 (that forces a password change at login); -1 means "not set".
CREATE OR REPLACE VIEW nss_shadow AS
    SELECT username, password_hash AS passwd,
           GREATEST(1, floor(extract(epoch FROM created_at) / 86400))::integer AS lastchange,
           0 AS min, 99999 AS max, 7 AS warn, -1 AS inact, -1 AS expire, -1 AS flag
    FROM nss_users WHERE is_active;
