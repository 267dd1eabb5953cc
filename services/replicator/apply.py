"""Making the local copy equal to the central rows in one transaction, touching only what differs.

Readers (the NSS module) run at READ COMMITTED without locks: until the commit they see the old
set, after it the new one; the table is never empty or half-written in between.

The replicator keeps what it last wrote in memory (`LocalCache`) so a sync need not read the
whole local table back: a statement trigger bumps `nss_users_version` on every write to
`nss_users`, by us or anyone else, and the cache is used only while the version is the one our
own last commit left.
"""

from __future__ import annotations

import msgspec

from .source import COLUMNS, LocalAccounts, invalid_reason

_COLS = ", ".join(COLUMNS)
_LOCAL_QUERY = f"SELECT {_COLS} FROM nss_users"
_VERSION_QUERY = "SELECT version FROM nss_users_version"
# Locking the version row first makes any other writer wait for our commit (its trigger updates
# this row), so nothing can slip in between reading the version and writing.
_VERSION_LOCK = "SELECT version FROM nss_users_version FOR UPDATE"
# Serialises writers if two replicators ever point at the same local database.
_LOCK_KEY = 0x6E73735F75736572  # "nss_user"

_PG_TYPES = (
    "bigint",
    "text",
    "text",
    "text",
    "boolean",
    "boolean",
    "integer",
    "integer",
    "timestamptz",
    "text",
    "text",
)
_UNNEST = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_PG_TYPES))
_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
_UPSERT = f"""
INSERT INTO nss_users ({_COLS})
SELECT * FROM unnest({_UNNEST})
ON CONFLICT (id) DO UPDATE SET {_SET}, replicated_at = now()
"""


class Counts(msgspec.Struct, kw_only=True, frozen=True):
    added: int = 0
    updated: int = 0
    removed: int = 0
    total: int = 0
    skipped: list[tuple[str, str]] = []  # (username, reason): central rows that cannot be host accounts


class LocalCache:
    """id -> row tuple as committed to nss_users, valid for `version` of nss_users_version."""

    __slots__ = ("rows", "version")

    def __init__(self) -> None:
        self.rows: dict[int, tuple] = {}
        self.version: int | None = None


class Diff(msgspec.Struct, kw_only=True):
    upserts: list[tuple]
    removed: list[int]
    added: int
    total: int
    skipped: list[tuple[str, str]]


def diff(central, local: dict[int, tuple], accounts: LocalAccounts | None = None) -> Diff:
    """Compare central rows (tuples or Records in COLUMNS order) with the local ones by id.

    A central row that fails the checks counts as absent, so an account made invalid centrally
    leaves the host rather than lingering in its old form; so does one that clashes with the
    host's own `accounts` (or a reserved name or id), however long it has been replicated.
    """
    accounts = accounts if accounts is not None else LocalAccounts()
    seen: set[int] = set()
    upserts: list[tuple] = []
    skipped: list[tuple[str, str]] = []
    added = 0
    for row in central:
        rid = row[0]
        clash = accounts.collision(row[1], row[6], row[7])
        if clash:
            skipped.append((str(row[1])[:64], clash))
            continue
        old = local.get(rid)
        if old is not None and old == row:
            seen.add(rid)  # unchanged: it passed the checks when it was written
            continue
        reason = invalid_reason(row)
        if reason:
            skipped.append((str(row[1])[:64], reason))
            continue
        seen.add(rid)
        upserts.append(tuple(row))
        if old is None:
            added += 1
    removed = [rid for rid in local if rid not in seen]
    return Diff(upserts=upserts, removed=removed, added=added, total=len(seen), skipped=skipped)


async def apply(conn, central, cache: LocalCache | None = None, accounts: LocalAccounts | None = None) -> Counts:
    """Bring `nss_users` (on `conn`) to exactly the valid rows of `central` that clash with none
    of the host's `accounts`, atomically."""
    cache = cache if cache is not None else LocalCache()
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            version = await conn.fetchval(_VERSION_LOCK)
            if cache.version is None or cache.version != version:
                cache.version = None
                cache.rows = {r[0]: tuple(r) for r in await conn.fetch(_LOCAL_QUERY)}
            local = cache.rows
            d = diff(central, local, accounts)
            # Deletes first: a name or uid freed by a removed account may be taken by a new one.
            if d.removed:
                await conn.execute("DELETE FROM nss_users WHERE id = ANY($1::bigint[])", d.removed)
            if d.upserts:
                if not local:
                    # First fill of an empty table: COPY is the fastest path and nothing can conflict.
                    await conn.copy_records_to_table("nss_users", records=d.upserts, columns=COLUMNS)
                else:
                    await conn.execute(_UPSERT, *[list(col) for col in zip(*d.upserts, strict=True)])
            if d.removed or d.upserts:
                version = await conn.fetchval(_VERSION_QUERY)
    except BaseException:
        cache.version = None  # whatever happened, the next sync reads the table again
        raise
    # Committed: the cache now mirrors the table.
    for rid in d.removed:
        del local[rid]
    for row in d.upserts:
        local[row[0]] = row
    cache.version = version
    return Counts(
        added=d.added, updated=len(d.upserts) - d.added, removed=len(d.removed), total=d.total, skipped=d.skipped
    )
