"""bench replicate: full sync of 100,000 users into an empty local copy, and a sync with 1 %
changed, on a real PostgreSQL (central and local databases of one throwaway cluster).

Baseline, measured in the same run: the raw minimum of a full copy (read the active users from
the central database, COPY them into an empty local table), i.e. the seeds' TRUNCATE + re-insert
without its empty window. Goal (issue 6): full < 5 s, 1 % change < 0.5 s.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import time

import asyncpg

from libs.embedded.stack import make_private_dir, start_postgres
from services.replicator import apply as applier
from services.replicator.source import COLUMNS, fetch_active_users
from tests.support.replicator import bulk_users, two_databases

N = 100_000
REPEAT = 3


class _Cluster:
    def __init__(self, pg) -> None:
        self.pg = pg

    def dsn(self, db: str) -> str:
        return self.pg.dsn(db)


CACHE = applier.LocalCache()  # the service keeps one for its lifetime


async def sync(central_dsn: str, local) -> tuple[float, applier.Counts]:
    t0 = time.perf_counter()
    central = await fetch_active_users(central_dsn, 60)
    counts = await applier.apply(local, central, CACHE)
    return time.perf_counter() - t0, counts


async def raw_copy(central_dsn: str, local) -> float:
    t0 = time.perf_counter()
    c = await asyncpg.connect(central_dsn)
    try:
        rows = [
            tuple(r)
            for r in await c.fetch(
                "SELECT id, username, email, password_hash, is_admin, is_active, system_uid, system_gid, created_at, shell, home FROM users WHERE is_active"
            )
        ]
    finally:
        await c.close()
    async with local.transaction():
        await local.execute("TRUNCATE nss_users")
        await local.copy_records_to_table("nss_users", records=rows, columns=COLUMNS)
    return time.perf_counter() - t0


async def run(pg) -> None:
    async with two_databases(_Cluster(pg)) as dbs:
        c = await asyncpg.connect(dbs.central_dsn)
        local = await asyncpg.connect(dbs.local_dsn)
        try:
            await bulk_users(c, N)
            await c.execute("ANALYZE users")
            rnd = random.Random(6)

            base, full, pct, noop = [], [], [], []
            for _ in range(REPEAT):
                base.append(await raw_copy(dbs.central_dsn, local))
                await local.execute("TRUNCATE nss_users")
                t, counts = await sync(dbs.central_dsn, local)
                assert counts.added == N, counts
                full.append(t)
            for i in range(REPEAT):
                # 1 %: 600 updated (shell or hash), 200 deactivated, 200 new.
                ids = rnd.sample(range(N), 800)
                names = [f"u{j:06d}" for j in ids]
                await c.execute(
                    "UPDATE users SET shell = CASE WHEN shell='/bin/bash' THEN '/bin/sh' ELSE '/bin/bash' END WHERE username = ANY($1::text[])",
                    names[:600],
                )
                await c.execute("UPDATE users SET is_active = false WHERE username = ANY($1::text[])", names[600:])
                await bulk_users(c, 200, prefix=f"n{i}", first_uid=500_000 + i * 1000)
                t, counts = await sync(dbs.central_dsn, local)
                assert counts.added + counts.updated + counts.removed == 1000, counts
                pct.append(t)
                await c.execute("UPDATE users SET is_active = true WHERE username = ANY($1::text[])", names[600:])
                await sync(dbs.central_dsn, local)
            for _ in range(REPEAT):
                t, counts = await sync(dbs.central_dsn, local)
                assert counts.added + counts.updated + counts.removed == 0
                noop.append(t)
        finally:
            await local.close()
            await c.close()

    m = statistics.median
    print(
        f"# {N} users, median of {REPEAT}: raw copy {m(base):.3f}s, full sync {m(full):.3f}s, 1% sync {m(pct):.3f}s, no-change sync {m(noop):.3f}s"
    )
    print(f"RESULT replicate_full {m(full):.3f} s")
    print(f"RESULT replicate_1pct {m(pct):.3f} s")
    print(f"RESULT replicate_full_vs_raw_copy {m(full) / m(base):.2f} x")
    print(f"RESULT replicate_1pct_vs_raw_copy {m(pct) / m(base):.2f} x")
    print(f"RESULT replicate_nochange {m(noop):.3f} s")


def main() -> None:
    root = make_private_dir(prefix="fleetwatch-bench-")
    pg = start_postgres(root)
    try:
        asyncio.run(run(pg))
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
