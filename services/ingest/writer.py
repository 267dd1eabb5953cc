"""Batched, idempotent writes: COPY straight into the tables, or through staging and
INSERT ... ON CONFLICT DO NOTHING when a batch holds rows stored before; on the plain path the
new frames' partial rollups go to `rollup_pending` in the same transaction (`rollups.fold`
moves them on). One call = one transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from . import rollups as rollups_mod
from . import rows
from .rollups import metrics_insert_sql

RAW_PARTITIONED = ("metrics", "metrics_disk", "metrics_gpu", "proc_samples", "metrics_1m")
DAY = 86400


class Item(NamedTuple):
    """A decoded message ready to store: `table` says where, `row` what (or the message), `time`
    the timestamp it carries (every decoded message has one)."""

    msg: Any
    table: str
    value: Any
    time: datetime


class Partitions:
    """Plain path: makes sure the partitions a batch needs exist (late data, clock skew)."""

    def __init__(self) -> None:
        self.known_days: set[int] = set()

    async def ensure(self, conn: asyncpg.Connection, times: list[datetime]) -> None:
        days = {int(t.timestamp() // DAY) for t in times} - self.known_days
        for day in sorted(days):
            at = datetime.fromtimestamp(day * DAY, rows.UTC)
            async with conn.transaction():
                for table in RAW_PARTITIONED:
                    await conn.execute(
                        "SELECT fleetwatch_ensure_partition($1::regclass, interval '1 day', $2)", table, at
                    )
                await conn.execute(
                    "SELECT fleetwatch_ensure_partition('metrics_1h'::regclass, interval '1 month', $1)", at
                )
            self.known_days.add(day)


class MetricsWriter:
    def __init__(self, *, rollups: bool, partitions: Partitions | None, last_seen_every: float = 10.0) -> None:
        self.rollups = rollups
        self.partitions = partitions
        self.last_seen_every = timedelta(seconds=last_seen_every)
        self._last_seen: dict[str, datetime] = {}
        self._sql = metrics_insert_sql(rollups)
        self.fast = 0  # batches copied straight in
        self.slow = 0  # batches that held frames stored before (redelivery) and went through staging
        self.frames = 0  # new frames committed (duplicates excluded)
        self.rows = 0  # rows committed over every table

    async def write(self, conn: asyncpg.Connection, items: list[Item]) -> None:
        frames = [i for i in items if i.table == "metrics"]
        snaps = [i for i in items if i.table == "proc_samples"]
        infos = [i for i in items if i.table == "hosts"]
        if self.partitions is not None:
            await self.partitions.ensure(conn, [i.time for i in frames] + [i.time for i in snaps])
        seen: dict[str, datetime] = {}
        for i in frames:
            h = i.value.host
            if h not in seen or seen[h] < i.time:
                seen[h] = i.time
        stale = {
            h: t
            for h, t in seen.items()
            if (prev := self._last_seen.get(h)) is None or t - prev >= self.last_seen_every
        }
        new = nrows = 0
        async with conn.transaction():
            if frames:
                new, n = await self._frames(conn, frames)
                nrows += n
            if snaps:
                procs = [r for i in snaps for r in rows.proc_rows(i.value, i.time)]
                if procs:
                    await conn.copy_records_to_table("_s_proc_samples", records=procs, columns=rows.PROC_COLUMNS)
                    await conn.execute("INSERT INTO proc_samples SELECT * FROM _s_proc_samples ON CONFLICT DO NOTHING")
                    nrows += len(procs)
            if infos:
                cols = rows.HOST_COLUMNS
                sets = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
                await conn.executemany(
                    f"INSERT INTO hosts ({', '.join(cols)}) VALUES ({', '.join(f'${n}' for n in range(1, len(cols) + 1))}) "
                    f"ON CONFLICT (host) DO UPDATE SET {sets} WHERE hosts.info_time IS NULL OR hosts.info_time <= excluded.info_time",
                    [rows.host_row(i.value) for i in infos],
                )
            if stale:
                hs = sorted(stale)
                await conn.execute(
                    "INSERT INTO hosts (host, last_seen) SELECT * FROM unnest($1::text[], $2::timestamptz[]) ORDER BY 1 "
                    "ON CONFLICT (host) DO UPDATE SET last_seen = greatest(hosts.last_seen, excluded.last_seen)",
                    hs,
                    [stale[h] for h in hs],
                )
        self._last_seen.update(stale)
        self.frames += new
        self.rows += nrows

    async def _frames(self, conn: asyncpg.Connection, frames: list[Item]) -> tuple[int, int]:
        """Frames -> metrics, metrics_disk, metrics_gpu (+ rollup_pending); (new frames, rows written).

        Fast path: COPY straight into the tables (a savepoint guards it). A frame stored before
        (a redelivery) makes it fail on the primary key; then the batch goes through staging
        tables and INSERT ... ON CONFLICT DO NOTHING, which skips what is already there."""
        recs = [rows.metrics_row(i.value, i.time) for i in frames]
        disks = [r for i in frames for r in rows.disk_rows(i.value, i.time)]
        gpus = [r for i in frames for r in rows.gpu_rows(i.value, i.time)]
        try:
            async with conn.transaction():
                await conn.copy_records_to_table("metrics", records=recs, columns=rows.METRICS_COLUMNS)
                if disks:
                    await conn.copy_records_to_table("metrics_disk", records=disks, columns=rows.DISK_COLUMNS)
                if gpus:
                    await conn.copy_records_to_table("metrics_gpu", records=gpus, columns=rows.GPU_COLUMNS)
                if self.rollups:
                    agg = rollups_mod.aggregate(recs, [i.time.timestamp() for i in frames], 60, rows.METRICS_COLUMNS)
                    await conn.copy_records_to_table("rollup_pending", records=agg, columns=rollups_mod.ROLLUP_COLUMNS)
            self.fast += 1
            return len(recs), len(recs) + len(disks) + len(gpus)
        except asyncpg.UniqueViolationError:
            self.slow += 1
        await conn.copy_records_to_table("_s_metrics", records=recs, columns=rows.METRICS_COLUMNS)
        if disks:
            await conn.copy_records_to_table("_s_metrics_disk", records=disks, columns=rows.DISK_COLUMNS)
        if gpus:
            await conn.copy_records_to_table("_s_metrics_gpu", records=gpus, columns=rows.GPU_COLUMNS)
        new = await conn.fetchval(self._sql)
        await conn.execute(
            "INSERT INTO metrics_disk SELECT * FROM _s_metrics_disk ON CONFLICT DO NOTHING;"
            "INSERT INTO metrics_gpu SELECT * FROM _s_metrics_gpu ON CONFLICT DO NOTHING"
        )
        return new, new + len(disks) + len(gpus)


class EventsWriter:
    def __init__(self) -> None:
        self.rows = 0

    async def write(self, conn: asyncpg.Connection, items: list[Item]) -> None:
        by_table: dict[str, list[tuple]] = {}
        for i in items:
            by_table.setdefault(i.table, []).append(i.value)
        async with conn.transaction():
            for table, recs in sorted(by_table.items()):
                cols = rows.EVENT_TABLES[table]
                await conn.copy_records_to_table(f"_s_{table}", records=recs, columns=cols)
                c = ", ".join(cols)
                await conn.execute(f"INSERT INTO {table} ({c}) SELECT {c} FROM _s_{table} ON CONFLICT DO NOTHING")
        self.rows += len(items)
