"""ingest watches TimescaleDB's background jobs (real nats-server, PostgreSQL, ingest, gateway).
TimescaleDB is not installed here, so the test database gets a stand-in: a schema
`timescaledb_information` whose `jobs`/`job_stats` views report a failed retention and a failed
compression job, and `drop_chunks`/`show_chunks`/`compress_chunk` functions that record their
calls. ingest runs the production SQL against them: the failing jobs reach its stats and the
gateway's /metrics, and ingest runs both policies itself."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.support.gateway import running_gateway
from tests.support.pipeline import fetch, poll, start_ingest, wait_until
from tests.test_service_stats import counters, metric

pytestmark = pytest.mark.timeout(240)

STAND_IN = """
CREATE SCHEMA timescaledb_information;
CREATE TABLE fw_tsjob_target (x int);
CREATE TABLE fw_tsjob_calls (fn text, rel text, older_than interval);
CREATE VIEW timescaledb_information.jobs AS
  SELECT 1001 AS job_id, 'policy_retention'::name AS proc_name, 'public'::name AS hypertable_schema,
         'fw_tsjob_target'::name AS hypertable_name, '{"drop_after": "14 days"}'::jsonb AS config
  UNION ALL SELECT 1002, 'policy_compression', 'public', 'fw_tsjob_target', '{"compress_after": "2 days"}'
  UNION ALL SELECT 1003, 'policy_refresh_continuous_aggregate', 'public', 'fw_tsjob_target', '{}';
CREATE VIEW timescaledb_information.job_stats AS
  SELECT 1001 AS job_id, 'Failed'::text AS last_run_status, 12::bigint AS total_failures
  UNION ALL SELECT 1002, 'Failed', 4 UNION ALL SELECT 1003, 'Success', 0;
CREATE FUNCTION public.drop_chunks(relation regclass, older_than interval) RETURNS SETOF text
  LANGUAGE sql AS $$ INSERT INTO fw_tsjob_calls VALUES ('drop_chunks', relation::text, older_than) RETURNING 'c' $$;
CREATE FUNCTION public.show_chunks(relation regclass, older_than interval) RETURNS SETOF regclass
  LANGUAGE sql AS $$ INSERT INTO fw_tsjob_calls VALUES ('show_chunks', relation::text, older_than) RETURNING relation $$;
CREATE FUNCTION public.compress_chunk(chunk regclass, if_not_compressed boolean) RETURNS regclass
  LANGUAGE sql AS $$ INSERT INTO fw_tsjob_calls VALUES ('compress_chunk', chunk::text, NULL) RETURNING chunk $$;
"""
DROP = """
DROP SCHEMA IF EXISTS timescaledb_information CASCADE;
DROP FUNCTION IF EXISTS public.drop_chunks(regclass, interval);
DROP FUNCTION IF EXISTS public.show_chunks(regclass, interval);
DROP FUNCTION IF EXISTS public.compress_chunk(regclass, boolean);
DROP TABLE IF EXISTS fw_tsjob_target, fw_tsjob_calls;
"""


async def _sql(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_failing_timescale_jobs_are_reported_and_their_policies_run(fresh_nats, admin, db_dsn, workdir):
    await _sql(db_dsn, DROP + STAND_IN)
    ingest = start_ingest(
        fresh_nats, db_dsn, workdir / f"tsjobs-{uuid.uuid4().hex[:6]}.log", FLEETWATCH_INGEST_JOBS_CHECK_INTERVAL="1"
    )
    try:
        q = "SELECT count(*) >= 2 FROM fw_tsjob_calls WHERE fn IN ('drop_chunks', 'compress_chunk')"
        await wait_until(lambda: poll(db_dsn, q), 60, what=f"fallback policies ({ingest.logs()[-2000:]})")
        calls = await fetch(db_dsn, "SELECT DISTINCT fn, rel, older_than::text AS o FROM fw_tsjob_calls ORDER BY 1")
        got = {(c["fn"], c["rel"], c["o"]) for c in calls}
        assert ("drop_chunks", "fw_tsjob_target", "14 days") in got
        assert ("show_chunks", "fw_tsjob_target", "2 days") in got
        assert ("compress_chunk", "fw_tsjob_target", None) in got

        async def reported():
            c = await counters(admin, "ingest")
            ok = c and c.gauges.get("timescale_jobs_failing") == 2 and c.counters.get("timescale_fallback_runs", 0) >= 4
            return c if ok else None

        # Checked every second: the fallback counter grows past one round (2 jobs a round).
        await wait_until(reported, 30, what="failing jobs in ingest's stats")
        with running_gateway(fresh_nats, db_dsn, workdir / "gw-tsjobs") as gw:
            async with gw.async_client("viewer") as c:

                async def exposed():
                    text = (await c.get("/metrics")).text
                    return text if metric(text, "fleetwatch_service_timescale_jobs_failing", service="ingest") else None

                text = await wait_until(exposed, 30, what="failing jobs on /metrics")
                assert metric(text, "fleetwatch_service_timescale_jobs_failing", service="ingest") == 2

        # The jobs recover: the gauge drops to 0 and no more fallbacks run (second use).
        await _sql(
            db_dsn,
            """CREATE OR REPLACE VIEW timescaledb_information.job_stats AS
                 SELECT 1001 AS job_id, 'Success'::text AS last_run_status, 12::bigint AS total_failures
                 UNION ALL SELECT 1002, 'Success', 4 UNION ALL SELECT 1003, 'Success', 0""",
        )

        async def recovered():
            c = await counters(admin, "ingest")
            return c if c and c.gauges.get("timescale_jobs_failing") == 0 else None

        await wait_until(recovered, 30, what="failing jobs back to 0")
    finally:
        ingest.stop()
        await _sql(db_dsn, DROP)
