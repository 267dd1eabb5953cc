-- Sessions are stateless signed tokens; a password change or reset must still end the sessions
-- opened with the old password. A session issued before this instant is refused.
ALTER TABLE users ADD COLUMN IF NOT EXISTS sessions_valid_after timestamptz;
