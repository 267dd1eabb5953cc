-- API tokens for automation: shown once at creation, stored as a SHA-256 of the whole token
-- (tokens are 256-bit random, so a fast hash is enough; the prefix id finds the row).
CREATE TABLE IF NOT EXISTS api_tokens (
    id          text PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    token_hash  text NOT NULL,
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    last_used_at timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_tokens_user_idx ON api_tokens (user_id);
