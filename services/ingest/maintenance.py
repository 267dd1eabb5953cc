"""Plain path housekeeping: partitions ahead of time, old partitions and events dropped.

Runs in every ingest process; an advisory lock lets only one do it at a time.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from .schema import Storage

log = logging.getLogger("fleetwatch.ingest.maintenance")

LOCK_KEY = 0x6677_696E_6765_7374  # "fwingest"
AHEAD_DAYS = 3
DAILY = ("metrics", "metrics_disk", "metrics_gpu", "proc_samples", "metrics_1m")
EVENT_TABLES = ("app_events", "health_results", "alert_events", "replica_status")


async def run_once(
    conn: asyncpg.Connection, storage: Storage, events_retention_days: int, now: datetime | None = None
) -> dict:
    now = now or datetime.now(UTC)
    done: dict = {"created": 0, "dropped": [], "events_deleted": 0}
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        return done
    try:
        if storage.backend == "partitions":
            for d in range(-1, AHEAD_DAYS + 1):
                at = now + timedelta(days=d)
                for t in DAILY:
                    await conn.execute("SELECT fleetwatch_ensure_partition($1::regclass, interval '1 day', $2)", t, at)
                    done["created"] += 1
            await conn.execute(
                "SELECT fleetwatch_ensure_partition('metrics_1h'::regclass, interval '1 month', $1)",
                now + timedelta(days=AHEAD_DAYS + 1),
            )
            drops = [(t, storage.raw_retention_s) for t in DAILY if t != "metrics_1m"]
            drops += [("metrics_1m", storage.rollup_1m_retention_s), ("metrics_1h", storage.rollup_1h_retention_s)]
            for t, keep in drops:
                rows = await conn.fetch(
                    "SELECT fleetwatch_drop_partitions($1::regclass, $2) AS name", t, now - timedelta(seconds=keep)
                )
                done["dropped"] += [r["name"] for r in rows]
        cutoff = now - timedelta(days=events_retention_days)
        for t in EVENT_TABLES:
            status = await conn.execute(f"DELETE FROM {t} WHERE time < $1", cutoff)
            done["events_deleted"] += int(status.split()[-1])
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    if done["dropped"] or done["events_deleted"]:
        log.info("retention applied", extra={"dropped": done["dropped"], "events_deleted": done["events_deleted"]})
    return done
