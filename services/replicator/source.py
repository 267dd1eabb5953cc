"""Reading the central users table: the active accounts, normalised and checked before they can
become login accounts on a host."""

from __future__ import annotations

import re

import asyncpg

# The order of every row tuple the replicator handles, central and local alike.
COLUMNS = (
    "id",
    "username",
    "email",
    "password_hash",
    "is_admin",
    "is_active",
    "system_uid",
    "system_gid",
    "created_at",
    "shell",
    "home",
)

# Empty shell/home centrally mean the defaults, resolved here so the diff compares what NSS serves.
CENTRAL_QUERY = """
SELECT id, username, email, password_hash, is_admin, is_active, system_uid, system_gid, created_at,
       COALESCE(NULLIF(shell, ''), '/bin/bash') AS shell,
       COALESCE(NULLIF(home, ''), '/home/' || username) AS home
FROM users
WHERE is_active
"""

USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# passwd and shadow are colon/newline separated: a field holding either would forge entries.
_BAD_FIELD = re.compile(r"[:\n\r\x00]")
MIN_ID = 1000  # never replicate a system or root account


def invalid_reason(row: tuple) -> str:
    """Why a central row must not become a host account ('' when it is fine). Never quotes the hash."""
    _id, username, email, pw, _adm, _act, uid, gid, _created, shell, home = row
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        return "invalid username"
    if uid is None or uid < MIN_ID or gid is None or gid < MIN_ID:
        return "uid/gid below 1000"
    if not shell.startswith("/") or not home.startswith("/"):
        return "shell and home must be absolute paths"
    for name, val in (("email", email), ("password_hash", pw), ("shell", shell), ("home", home)):
        if _BAD_FIELD.search(val):
            return f"{name} contains a separator character"
    return ""


async def fetch_active_users(dsn: str, timeout: float) -> list:
    """Every active central user (asyncpg Records, tuple-comparable in COLUMNS order), or an
    exception when the central database cannot be read. Checking them is the diff's job: only
    rows that changed since the last sync need it."""
    conn = await asyncpg.connect(
        dsn, timeout=timeout, command_timeout=timeout, server_settings={"application_name": "fleetwatch-replicator"}
    )
    try:
        return await conn.fetch(CENTRAL_QUERY)
    finally:
        await conn.close(timeout=timeout)
