"""TimescaleDB's background jobs, watched: a job whose last run failed is counted in ingest's
stats, logged, and — for retention and compression — done by ingest itself, so the tiers stay
true when the job scheduler cannot run them (seen with PostgreSQL 15.20 + TimescaleDB 2.28.3:
every job failing with "cannot drop portal").

Reads the public `timescaledb_information.jobs` / `job_stats` views; without them (plain
PostgreSQL path) there is nothing to watch and ingest's own retention applies."""

from __future__ import annotations

import json
import logging

import asyncpg
import msgspec

log = logging.getLogger("fleetwatch.ingest.tsjobs")

FAILING_SQL = """
SELECT j.job_id, j.proc_name::text AS proc_name, j.hypertable_schema::text AS hschema,
       j.hypertable_name::text AS hname, j.config::text AS config, s.total_failures
  FROM timescaledb_information.jobs j
  JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
 WHERE s.last_run_status = 'Failed'
 ORDER BY j.job_id"""
# The policies ingest can run in a job's place: proc_name -> (config key, statement).
DROP_SQL = "SELECT count(*) FROM drop_chunks($1::regclass, older_than => $2::text::interval)"
COMPRESS_SQL = (
    "SELECT count(compress_chunk(c, if_not_compressed => true))"
    " FROM show_chunks($1::regclass, older_than => $2::text::interval) c"
)
FALLBACKS = {"policy_retention": ("drop_after", DROP_SQL), "policy_compression": ("compress_after", COMPRESS_SQL)}


class FailingJob(msgspec.Struct, frozen=True):
    job_id: int
    proc_name: str
    hypertable: str  # schema.name, quoted
    config: dict
    total_failures: int


async def failing_jobs(conn: asyncpg.Connection) -> list[FailingJob] | None:
    """The jobs whose last run failed; None when the views are absent (no TimescaleDB)."""
    if not await conn.fetchval("SELECT to_regclass('timescaledb_information.job_stats') IS NOT NULL"):
        return None
    out = []
    for r in await conn.fetch(FAILING_SQL):
        rel = await conn.fetchval("SELECT format('%I.%I', $1::text, $2::text)", r["hschema"], r["hname"])
        cfg = json.loads(r["config"]) if r["config"] else {}
        out.append(FailingJob(r["job_id"], r["proc_name"], rel, cfg, int(r["total_failures"] or 0)))
    return out


async def run_fallbacks(conn: asyncpg.Connection, jobs: list[FailingJob]) -> int:
    """Run each failing retention/compression job's policy here; returns how many ran."""
    ran = 0
    for j in jobs:
        what = FALLBACKS.get(j.proc_name)
        if what is None or not j.hypertable or what[0] not in j.config:
            continue
        key, sql = what
        try:
            n = await conn.fetchval(sql, j.hypertable, str(j.config[key]))
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # one job's failure, not all
            log.warning("fallback for job %s (%s) failed: %s", j.job_id, j.proc_name, exc)
            continue
        ran += 1
        log.info("ran a failing job's policy", extra={"job_id": j.job_id, "policy": j.proc_name, "chunks": n})
    return ran


class JobWatch:
    """What the last check saw, for the service stats."""

    def __init__(self) -> None:
        self.failing: int | None = None  # None: not checked yet, or no TimescaleDB
        self.fallback_runs = 0
        self.reason = ""

    async def check(self, conn: asyncpg.Connection) -> None:
        jobs = await failing_jobs(conn)
        if jobs is None:
            self.failing, self.reason = None, ""
            return
        self.failing = len(jobs)
        self.reason = ", ".join(f"job {j.job_id} {j.proc_name} on {j.hypertable}" for j in jobs)
        if jobs:
            log.warning("TimescaleDB jobs failing: %s", self.reason)
            self.fallback_runs += await run_fallbacks(conn, jobs)
