"""Making the local copy equal to the central rows in one transaction, touching only what differs.

Readers (the NSS module) run at READ COMMITTED without locks: until the commit they see the old
set, after it the new one; the table is never empty or half-written in between.
"""

from __future__ import annotations

import msgspec

from .source import COLUMNS

_COLS = ", ".join(COLUMNS)
_LOCAL_QUERY = f"SELECT {_COLS} FROM nss_users"
# Serialises writers if two replicators ever point at the same local database.
_LOCK_KEY = 0x6E73735F75736572  # "nss_user"

_PG_TYPES = ("bigint", "text", "text", "text", "boolean", "boolean", "integer", "integer", "timestamptz", "text", "text")
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


def diff(central: list[tuple], local: dict[int, tuple]) -> tuple[list[tuple], list[int], int]:
    """(rows to upsert, ids to delete, how many of the upserts are new)."""
    seen: set[int] = set()
    upserts: list[tuple] = []
    added = 0
    for row in central:
        rid = row[0]
        seen.add(rid)
        old = local.get(rid)
        if old is None:
            upserts.append(row)
            added += 1
        elif old != row:
            upserts.append(row)
    removed = [rid for rid in local if rid not in seen]
    return upserts, removed, added


async def apply(conn, central: list[tuple]) -> Counts:
    """Bring `nss_users` (on `conn`) to exactly `central`, atomically."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        local = {r[0]: tuple(r) for r in await conn.fetch(_LOCAL_QUERY)}
        upserts, removed, added = diff(central, local)
        # Deletes first: a name or uid freed by a removed account may be taken by a new one.
        if removed:
            await conn.execute("DELETE FROM nss_users WHERE id = ANY($1::bigint[])", removed)
        if upserts:
            if not local:
                # First fill of an empty table: COPY is the fastest path and nothing can conflict.
                await conn.copy_records_to_table("nss_users", records=upserts, columns=COLUMNS)
            else:
                await conn.execute(_UPSERT, *[list(col) for col in zip(*upserts)])
    return Counts(added=added, updated=len(upserts) - added, removed=len(removed), total=len(central))
