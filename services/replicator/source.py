"""Reading the central users table: the active accounts, normalised and checked before they can
become login accounts on a host."""

from __future__ import annotations

import re
from pathlib import Path

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
# nobody/nogroup, and (uint16)-1 and (uint32)-1/-2, which chown(2) and setuid(2) read as "no id".
RESERVED_IDS = frozenset({65534, 65535, 4294967294, 4294967295})
# Names a central account must never take, whether or not this host's passwd lists them (a
# container's may be minimal): a login named `root` or `daemon` would shadow or confuse them.
RESERVED_NAMES = frozenset({"root", "daemon", "bin", "sys", "adm", "nobody", "nogroup", "sudo", "wheel"})


class LocalAccounts:
    """The host's own accounts, read from its passwd file (not through NSS, which would also
    answer with the accounts we replicated). A central account with one of these names or uids
    would be a second entry for the same name or uid: NSS serves the local one first, so the
    central user would log in as a local account (its files, its sudo rights) or not at all."""

    __slots__ = ("names", "path", "uids")

    def __init__(self, path: str = "", names: dict[str, int] | None = None, uids: dict[int, str] | None = None):
        self.path = path
        self.names = names or {}
        self.uids = uids or {}

    @classmethod
    def read(cls, path: str) -> LocalAccounts:
        """Parse a passwd(5) file; an empty path means no local accounts are checked. A file that
        cannot be read raises: syncing without knowing the local accounts could shadow them."""
        accounts = cls(path)
        if not path:
            return accounts
        for line in Path(path).read_text(errors="replace").splitlines():
            fields = line.split(":")
            # Blank, comment, and NIS compat (+/-) lines name nobody in particular.
            if len(fields) < 3 or not fields[0] or fields[0][0] in "#+-":
                continue
            accounts.names.setdefault(fields[0], -1)
            try:
                uid = int(fields[2])
            except ValueError:
                continue
            accounts.names[fields[0]] = uid
            accounts.uids.setdefault(uid, fields[0])
        return accounts

    def collision(self, username: str, uid: int | None, gid: int | None) -> str:
        """Why this central account would clash with a local or reserved one ('' when it would
        not). Asked on every sync, of unchanged rows too: the host's accounts change on their own."""
        if username in RESERVED_NAMES:
            return f"name {username!r} is reserved for a system account"
        if uid in RESERVED_IDS or gid in RESERVED_IDS:
            return "uid/gid is a reserved id (nobody, or -1 in 16 or 32 bits)"
        if username in self.names:
            return f"name {username!r} is a local account of this host"
        if uid is not None and uid in self.uids:
            return f"uid {uid} is this host's local account {self.uids[uid]!r}"
        return ""


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
