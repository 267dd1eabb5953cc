"""Replicator core against real central and local databases: the diff follows every central
change, touches only what changed, and never leaves readers without a user."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import pytest

from services.replicator import apply as applier
from services.replicator.source import fetch_active_users
from tests.support.replicator import add_user, bulk_users, local_users, two_databases


@pytest.fixture
async def dbs(pg_cluster):
    async with two_databases(pg_cluster) as d:
        yield d


async def sync(dbs, cache: applier.LocalCache | None = None) -> applier.Counts:
    central = await fetch_active_users(dbs.central_dsn, 10)
    conn = await asyncpg.connect(dbs.local_dsn)
    try:
        return await applier.apply(conn, central, cache)
    finally:
        await conn.close()


async def xmins(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            r["username"]: int(r["xmin"])
            for r in await conn.fetch("SELECT username, xmin::text::bigint AS xmin FROM nss_users")
        }
    finally:
        await conn.close()


async def test_local_copy_follows_create_update_deactivate_delete(dbs):
    c = await asyncpg.connect(dbs.central_dsn)
    try:
        alice = await add_user(c, "alice", 2001, is_admin=True, shell="/bin/zsh")
        await add_user(c, "bob", 2002)
        await add_user(c, "carol", 2003, home="/srv/carol")
        await add_user(c, "dave", 2004, active=False)

        counts = await sync(dbs)
        assert (counts.added, counts.updated, counts.removed, counts.total) == (3, 0, 0, 3)
        local = await local_users(dbs.local_dsn)
        assert set(local) == {"alice", "bob", "carol"}  # inactive dave is not a host account
        assert local["alice"][:5] == ("alice", 2001, 2001, "/bin/zsh", "/home/alice")
        assert local["alice"][6] is True and local["carol"][4] == "/srv/carol"
        central_hash = await c.fetchval("SELECT password_hash FROM users WHERE username='bob'")
        assert local["bob"][5] == central_hash

        before = await xmins(dbs.local_dsn)
        await c.execute(
            "UPDATE users SET shell='/bin/sh', password_hash=$1 WHERE username='bob'", "$6$newsalt$" + "x" * 86
        )
        await c.execute("UPDATE users SET username='alicia' WHERE id=$1", alice)  # rename: same account
        await c.execute("UPDATE users SET is_active=false WHERE username='carol'")
        await c.execute("UPDATE users SET is_active=true WHERE username='dave'")
        counts = await sync(dbs)
        assert (counts.added, counts.updated, counts.removed, counts.total) == (1, 2, 1, 3)
        local = await local_users(dbs.local_dsn)
        assert set(local) == {"alicia", "bob", "dave"}
        assert local["bob"][3] == "/bin/sh" and local["bob"][5].startswith("$6$newsalt$")

        await c.execute("DELETE FROM users WHERE username='dave'")
        after_update = await xmins(dbs.local_dsn)
        counts = await sync(dbs)
        assert (counts.added, counts.updated, counts.removed) == (0, 0, 1)
        assert set(await local_users(dbs.local_dsn)) == {"alicia", "bob"}
        # Rows that did not change were not rewritten (same tuple version).
        assert (await xmins(dbs.local_dsn))["bob"] == after_update["bob"]
        assert after_update["bob"] != before["bob"]

        counts = await sync(dbs)  # nothing changed centrally -> nothing written
        assert (counts.added, counts.updated, counts.removed, counts.total) == (0, 0, 0, 2)
    finally:
        await c.close()


async def test_in_memory_copy_is_dropped_when_someone_else_writes_the_table(dbs):
    cache = applier.LocalCache()
    c = await asyncpg.connect(dbs.central_dsn)
    local = await asyncpg.connect(dbs.local_dsn)
    try:
        for i in range(5):
            await add_user(c, f"k{i}", 8000 + i)
        assert (await sync(dbs, cache)).added == 5
        assert cache.version is not None and len(cache.rows) == 5
        assert (await sync(dbs, cache)).updated == 0  # served from the cache, still correct
        # A hand edit on the host: the next sync notices and restores the central truth.
        await local.execute("DELETE FROM nss_users WHERE username='k1'")
        await local.execute("UPDATE nss_users SET shell='/bin/false' WHERE username='k2'")
        counts = await sync(dbs, cache)
        assert (counts.added, counts.updated, counts.removed) == (1, 1, 0)
        users = await local_users(dbs.local_dsn)
        assert "k1" in users and users["k2"][3] == "/bin/bash"
        assert (await sync(dbs, cache)).updated == 0
    finally:
        await local.close()
        await c.close()


async def test_one_sync_can_move_a_name_and_a_uid_between_accounts(dbs):
    c = await asyncpg.connect(dbs.central_dsn)
    try:
        await add_user(c, "erin", 3001)
        await add_user(c, "frank", 3002)
        await sync(dbs)
        # Swap both names and uids in one central transaction: locally, unique checks are
        # deferred to commit so the single sync transaction can apply it.
        async with c.transaction():
            await c.execute("UPDATE users SET username='tmp', system_uid=3999 WHERE username='erin'")
            await c.execute("UPDATE users SET username='erin', system_uid=3001 WHERE username='frank'")
            await c.execute("UPDATE users SET username='frank', system_uid=3002 WHERE username='tmp'")
        # And a deleted account's name reused by a new one.
        await c.execute("DELETE FROM users WHERE username='erin'")
        await add_user(c, "erin", 3003)
        counts = await sync(dbs)
        assert (counts.added, counts.updated, counts.removed) == (1, 1, 1)
        local = await local_users(dbs.local_dsn)
        assert {k: v[1] for k, v in local.items()} == {"erin": 3003, "frank": 3002}
    finally:
        await c.close()


async def test_rows_that_cannot_be_host_accounts_are_skipped(dbs):
    c = await asyncpg.connect(dbs.central_dsn)
    try:
        await add_user(c, "good", 4001)
        await add_user(c, "relhome", 4002, home="relative/home")
        await add_user(c, "colon", 4003, shell="/bin/sh:evil")
        counts = await sync(dbs)
        assert sorted(name for name, _ in counts.skipped) == ["colon", "relhome"]
        assert set(await local_users(dbs.local_dsn)) == {"good"}
        # A valid account made invalid centrally leaves the host rather than staying as it was.
        await c.execute("UPDATE users SET home='' WHERE username='relhome'")
        await c.execute("UPDATE users SET shell='/bin/bash\nx' WHERE username='good'")
        counts = await sync(dbs)
        assert (counts.added, counts.removed) == (1, 1)
        assert sorted(n for n, _ in counts.skipped) == ["colon", "good"]
        assert set(await local_users(dbs.local_dsn)) == {"relhome"}
    finally:
        await c.close()


async def test_nss_roles_see_no_hash_without_the_shadow_role(dbs):
    conn = await asyncpg.connect(dbs.local_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE fleetwatch_nss")
            assert await conn.fetchval("SELECT count(*) FROM nss_passwd") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM nss_shadow")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE fleetwatch_nss")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT password_hash FROM nss_users")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE fleetwatch_nss_shadow")
            assert await conn.fetchval("SELECT count(*) FROM nss_shadow") == 0
    finally:
        await conn.close()


async def _reader(dsn: str, stable: list[str], stop: asyncio.Event, stats: dict) -> None:
    """NSS-style lookups in a loop: the whole stable set at once, and single names by key."""
    conn = await asyncpg.connect(dsn)
    rnd = random.Random(7)
    try:
        while not stop.is_set():
            n = await conn.fetchval("SELECT count(*) FROM nss_passwd WHERE username = ANY($1::text[])", stable)
            stats["lookups"] += 1
            if n != len(stable):
                stats["missing"] += 1
            for name in rnd.sample(stable, 5):
                if (
                    await conn.fetchrow(
                        "SELECT username, passwd, gecos, homedir, shell, uid, gid FROM nss_passwd WHERE username = $1",
                        name,
                    )
                    is None
                ):
                    stats["missing"] += 1
                stats["lookups"] += 1
            await asyncio.sleep(0)
    finally:
        await conn.close()


async def _churn(c, rnd: random.Random, n: int) -> None:
    """A central change: some users updated, some deleted and recreated (never the stable ones)."""
    ids = rnd.sample(range(n // 2, n), 100)
    await c.execute(
        "UPDATE users SET shell = CASE WHEN shell='/bin/bash' THEN '/bin/sh' ELSE '/bin/bash' END WHERE username = ANY($1::text[])",
        [f"u{i:06d}" for i in ids[:50]],
    )
    await c.execute(
        "UPDATE users SET is_active = NOT is_active WHERE username = ANY($1::text[])", [f"u{i:06d}" for i in ids[50:]]
    )


async def test_readers_never_miss_a_user_during_100_syncs_of_10000(dbs):
    n = 10_000
    c = await asyncpg.connect(dbs.central_dsn)
    try:
        await bulk_users(c, n)
        await sync(dbs)
        stable = [f"u{i:06d}" for i in range(0, n // 2, 10)]  # 500 users no sync ever removes
        stop = asyncio.Event()
        stats = {"lookups": 0, "missing": 0}
        reader = asyncio.create_task(_reader(dbs.local_dsn, stable, stop, stats))
        rnd = random.Random(1)
        changed = 0
        cache = applier.LocalCache()  # as the service runs it
        t0 = time.monotonic()
        for _ in range(100):
            await _churn(c, rnd, n)
            counts = await sync(dbs, cache)
            changed += counts.added + counts.updated + counts.removed
        stop.set()
        await reader
        assert stats["missing"] == 0, stats
        assert stats["lookups"] > 100  # the reader really ran alongside the syncs
        assert changed >= 100 * 50  # every sync really rewrote part of the table
        print(f"100 syncs of {n} users in {time.monotonic() - t0:.1f}s, {stats['lookups']} lookups, none missing")
    finally:
        await c.close()


async def test_the_reader_does_catch_a_non_atomic_sync(dbs):
    """Control for the test above: the seeds' empty-then-refill copy is seen half-done."""
    n = 10_000
    c = await asyncpg.connect(dbs.central_dsn)
    local = await asyncpg.connect(dbs.local_dsn)
    try:
        await bulk_users(c, n)
        await sync(dbs)
        stable = [f"u{i:06d}" for i in range(0, n // 2, 10)]
        stop = asyncio.Event()
        stats = {"lookups": 0, "missing": 0}
        reader = asyncio.create_task(_reader(dbs.local_dsn, stable, stop, stats))
        rows = [tuple(r) for r in await fetch_active_users(dbs.central_dsn, 10)]
        from services.replicator.source import COLUMNS

        for _ in range(20):
            await local.execute("DELETE FROM nss_users")  # autocommit: the window the seeds have
            await asyncio.sleep(0.01)
            await local.copy_records_to_table("nss_users", records=rows, columns=COLUMNS)
            if stats["missing"]:
                break
        stop.set()
        await reader
        assert stats["missing"] > 0
    finally:
        await local.close()
        await c.close()
