-- The central users table (owned by gateway, read by every host's replicator).
-- password_hash is a crypt(3) string (yescrypt or sha512-crypt) so pam_unix can verify it.
CREATE TABLE IF NOT EXISTS users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    email         text NOT NULL DEFAULT '',
    password_hash text NOT NULL DEFAULT '!',
    is_admin      boolean NOT NULL DEFAULT false,
    is_active     boolean NOT NULL DEFAULT true,
    system_uid    integer NOT NULL UNIQUE CHECK (system_uid >= 1000),
    system_gid    integer NOT NULL CHECK (system_gid >= 1000),
    shell         text NOT NULL DEFAULT '/bin/bash',
    home          text NOT NULL DEFAULT '',
    role          text NOT NULL DEFAULT 'viewer' CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS users_active_idx ON users (is_active);
