"""ingest's TimescaleDB path: hypertables, compression and retention policies with the tier
defaults, continuous aggregates `metrics_1m`/`metrics_1h`, idempotent writes into compressed
chunks, and the gateway reading both rollup tiers from the aggregates.

Runs where the `timescaledb` extension is installed into the PostgreSQL the tests use (the
harness then preloads it, see `libs.embedded.postgres.preload_settings`); elsewhere each test
skips, naming the missing extension. The plain-PostgreSQL path is covered by test_ingest.py.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from fleetwatch.simulate import Simulator
from tests.support.gateway import running_gateway
from tests.support.pipeline import fetch, fetchval, poll, start_ingest, wait_until

pytestmark = pytest.mark.timeout(300)

RAW = ("metrics", "metrics_disk", "metrics_gpu", "proc_samples")
DAY = 86400.0
ORIGIN = "TIMESTAMPTZ '2000-01-03 00:00:00+00'"


@pytest.fixture
async def tsdb_dsn(db_dsn):
    """The test's database, on a server with TimescaleDB (or the test is skipped)."""
    conn = await asyncpg.connect(db_dsn)
    try:
        installed = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    finally:
        await conn.close()
    if not installed:
        pytest.skip(
            "the timescaledb extension is not installed on this PostgreSQL: only the native-partitions path can run here"
        )
    # Installed but not preloaded would be a harness bug, not a reason to skip.
    assert "timescaledb" in preload, (
        f"timescaledb is installed but the test cluster does not preload it (shared_preload_libraries={preload!r})"
    )
    return db_dsn


async def _jobs(conn) -> dict[tuple[str, str], dict]:
    """(policy, table or continuous aggregate) -> the job's config."""
    rows = await conn.fetch(
        """SELECT j.proc_name, coalesce(ca.view_name, j.hypertable_name) AS target, j.config, j.scheduled
             FROM timescaledb_information.jobs j
             LEFT JOIN timescaledb_information.continuous_aggregates ca
                    ON ca.materialization_hypertable_name = j.hypertable_name
            WHERE j.proc_name LIKE 'policy_%' AND j.hypertable_name IS NOT NULL"""
    )
    out = {}
    for r in rows:
        assert r["scheduled"], f"{r['proc_name']} on {r['target']} is not scheduled"
        out[(r["proc_name"], r["target"])] = json.loads(r["config"])
    return out


async def _insert_raw(conn, at: datetime, host: str, seq: int, cpu: float = 10, conflict: str = "") -> None:
    """A minimal frame row, straight into `metrics`."""
    await conn.execute(
        "INSERT INTO metrics (time, host, boot, seq, cpu_percent, cpu_count, mem_total, mem_available, mem_used, mem_percent) "
        f"VALUES ($1, $2, 1, $3, $4, 4, 100, 50, 50, 50) {conflict}",
        at,
        host,
        seq,
        cpu,
    )


async def _run_job(conn, proc: str, table: str) -> None:
    job = await conn.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1 AND hypertable_name = $2", proc, table
    )
    assert job is not None, f"no {proc} job on {table}"
    await conn.execute("CALL run_job($1)", job)


async def test_schema_policies_compression_and_retention(tsdb_dsn):
    from services.ingest import schema

    conn = await asyncpg.connect(tsdb_dsn)
    try:
        assert await schema.apply(conn, "timescaledb") == [
            "0001_history.py",
            "0002_rollup_pending.py",
            "0003_brin_time.py",
        ]
        assert await schema.apply(conn, "timescaledb") == []  # recorded once, not redone
        st = await schema.storage(conn)
        assert st == schema.Storage(
            "timescaledb", 14 * DAY, 90 * DAY, 2 * 365.25 * DAY
        )  # PostgreSQL: a year is 365.25 days
        # TimescaleDB keeps the rollups: no plain-path machinery.
        assert await conn.fetchval("SELECT to_regclass('rollup_pending')") is None
        assert await conn.fetchval("SELECT to_regproc('fleetwatch_ensure_partition')") is None

        hts = {
            r["hypertable_name"]: r["compression_enabled"]
            for r in await conn.fetch(
                "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            )
        }
        assert {t: hts.get(t) for t in RAW} == {t: True for t in RAW}
        seg = await conn.fetch(
            "SELECT hypertable::text AS t, segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
        )
        got = {r["t"]: (r["segmentby"], r["orderby"].replace('"', "").split(",")) for r in seg if r["t"] in RAW}
        assert got == {
            "metrics": ("host", ["time DESC", "boot", "seq"]),
            "metrics_disk": ("host", ["time DESC", "mount"]),
            "metrics_gpu": ("host", ["time DESC", "gpu_index"]),
            "proc_samples": ("host", ["time DESC", "pid"]),
        }
        caggs = await conn.fetch(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
        )
        assert {r["view_name"]: r["materialized_only"] for r in caggs} == {"metrics_1m": False, "metrics_1h": False}

        jobs = await _jobs(conn)
        for t in RAW:
            assert jobs.pop(("policy_compression", t))["compress_after"] == "2 days"
            assert jobs.pop(("policy_retention", t))["drop_after"] == "14 days"
        assert jobs.pop(("policy_retention", "metrics_1m"))["drop_after"] == "90 days"
        assert jobs.pop(("policy_retention", "metrics_1h"))["drop_after"] == "2 years"
        r1m = jobs.pop(("policy_refresh_continuous_aggregate", "metrics_1m"))
        r1h = jobs.pop(("policy_refresh_continuous_aggregate", "metrics_1h"))
        assert (r1m["start_offset"], r1m["end_offset"]) == ("3 days", "00:01:00")
        assert (r1h["start_offset"], r1h["end_offset"]) == ("7 days", "01:00:00")
        assert jobs == {}  # nothing unexpected

        # The policies do what they say when they run: a 3-day-old chunk is compressed, a
        # 20-day-old one dropped, today's left alone.
        now = datetime.now(UTC)
        for seq, age in enumerate((0, 3, 20)):
            await _insert_raw(conn, now - timedelta(days=age), "tsdb-a", seq)
        await _run_job(conn, "policy_compression", "metrics")
        chunks = await conn.fetch(
            "SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' ORDER BY range_start"
        )
        assert len(chunks) == 3
        assert [c["is_compressed"] for c in chunks] == [True, True, False]
        await _run_job(conn, "policy_retention", "metrics")
        assert await conn.fetchval("SELECT array_agg(seq ORDER BY seq) FROM metrics") == [0, 1]
        # A late frame for a compressed chunk lands; the same frame again does not.
        late = chunks[1]["range_start"] + timedelta(minutes=1)  # inside the compressed 3-day-old chunk
        await _insert_raw(conn, late, "tsdb-a", 9)
        await _insert_raw(conn, late, "tsdb-a", 9, cpu=99, conflict="ON CONFLICT DO NOTHING")
        with pytest.raises(asyncpg.UniqueViolationError):  # the key is enforced on compressed data
            await _insert_raw(conn, now - timedelta(days=3), "tsdb-a", 1)
        assert await conn.fetchval("SELECT array_agg(cpu_percent ORDER BY seq) FROM metrics") == [10, 10, 10]
        assert (
            await conn.fetchval("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'")
            == 2
        )
    finally:
        await conn.close()


async def _republish(admin, frames, suffix: str) -> None:
    """The same frames under new message ids: what a publisher retrying after the stream's
    dedupe window sends, so ingest sees each one a second time."""
    js = admin.jetstream()
    for f in frames:
        subject, data, mid = Simulator.encoded(f)
        await js.publish(subject, data, headers={"Nats-Msg-Id": mid + suffix}, timeout=10)


async def _acked(admin) -> bool:
    info = await admin.jetstream().consumer_info("METRICS", "ingest_metrics")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_frames_land_once_and_aggregates_serve_history(tsdb_dsn, admin, fresh_nats, workdir):
    dsn = tsdb_dsn
    # One frame a minute for 2.5 hours: every 1-minute bucket holds one frame, hours hold 60.
    sim = Simulator(["tsdb-a", "tsdb-b", "tsdb-c", "tsdb-d"], interval=60.0, seed=5)
    end = time.time() - 300
    frames = sim.history(150, end=end)
    snaps = [sim.snapshot(h, end) for h in sim.host_ids]
    await sim.publish(admin, frames + snaps + [sim.info(h) for h in sim.host_ids])
    log = workdir / f"ingest-tsdb-{uuid.uuid4().hex[:6]}.log"
    p = start_ingest(fresh_nats, dsn, log, FLEETWATCH_INGEST_STORAGE="timescaledb")
    try:
        await wait_until(lambda: poll(dsn, "SELECT count(*) = $1 FROM metrics", len(frames)), 90, what="frames")
        assert await fetchval(dsn, "SELECT backend FROM history_storage") == "timescaledb"
        gpu_frames = sum(len(f.gpus) for f in frames)
        assert await fetchval(dsn, "SELECT count(*) FROM metrics_disk") == 2 * len(frames)
        assert await fetchval(dsn, "SELECT count(*) FROM metrics_gpu") == gpu_frames and gpu_frames > 0
        await wait_until(
            lambda: fetchval(dsn, "SELECT count(*) = $1 FROM proc_samples", sum(len(s.procs) for s in snaps)),
            30,
            what="snapshots",
        )
        await wait_until(lambda: _acked(admin), 30, what="all acked")

        # Compress everything, then deliver every frame again plus a few new ones: the new
        # land, the old ones stay single (conflicts are checked against compressed data too).
        for t in ("metrics", "metrics_disk", "metrics_gpu"):
            await fetchval(dsn, f"SELECT count(compress_chunk(c)) FROM show_chunks('{t}') c")
        assert await fetchval(
            dsn, "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'"
        )
        extra = sim.history(2, end=end + 120)  # two more minutes, still in the past
        await _republish(admin, frames, ":again")
        await sim.publish(admin, extra)
        total = len(frames) + len(extra)
        await wait_until(
            lambda: poll(dsn, "SELECT count(*) = $1 FROM metrics", total), 90, what="new frames after the redelivery"
        )
        await wait_until(lambda: _acked(admin), 60, what="redelivered frames acked")
        assert await fetchval(dsn, "SELECT count(*) FROM metrics") == total
        assert (
            await fetchval(dsn, "SELECT count(*) FROM (SELECT DISTINCT host, time, boot, seq FROM metrics) d") == total
        )
        assert await fetchval(dsn, "SELECT count(*) FROM metrics_disk") == 2 * total
        info = await admin.jetstream().stream_info("DEADLETTER")
        assert info.state.messages == 0, "nothing should have been dead-lettered"

        # The continuous aggregates, once refreshed, hold what the raw rows average to.
        for view, width in (("metrics_1m", "1 minute"), ("metrics_1h", "1 hour")):
            await fetchval(dsn, f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
            mat = await fetchval(
                dsn,
                "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates WHERE view_name = $1",
                view,
            )
            pairs = await fetch(
                dsn,
                f"""SELECT r.samples, r.cpu_percent, r.cpu_percent_max, r.mem_used, r.gpu_util_percent, raw.n, raw.cpu, raw.cpu_max, raw.mem_used AS raw_mem, raw.gpu
                      FROM {mat} r JOIN (
                          SELECT host, date_bin(INTERVAL '{width}', time, {ORIGIN}) AS b, count(*) AS n, avg(cpu_percent) AS cpu,
                                 max(cpu_percent) AS cpu_max, avg(mem_used)::float8 AS mem_used, avg(gpu_util_percent) AS gpu
                            FROM metrics GROUP BY 1, 2) raw ON raw.host = r.host AND raw.b = r.time""",
            )
            assert await fetchval(dsn, f"SELECT count(*) FROM {mat}") == len(pairs) > 0
            assert sum(x["samples"] for x in pairs) == total
            if view == "metrics_1h":
                assert len(pairs) >= 3 * len(sim.host_ids) and max(x["samples"] for x in pairs) == 60
            for x in pairs:
                assert x["samples"] == x["n"]
                assert x["cpu_percent"] == pytest.approx(x["cpu"], rel=1e-5)
                assert x["cpu_percent_max"] == pytest.approx(x["cpu_max"], rel=1e-5)
                assert x["mem_used"] == pytest.approx(x["raw_mem"], rel=1e-9)
                assert (x["gpu_util_percent"] is None) == (x["gpu"] is None)

        # The gateway reads both tiers from the aggregates, with the values of the raw rows.
        with running_gateway(fresh_nats, dsn, workdir / f"gw-tsdb-{uuid.uuid4().hex[:6]}") as gw:
            async with gw.async_client("viewer", timeout=60) as c:
                now = time.time()
                r1m = await c.get(
                    "/api/v1/hosts/tsdb-a/metrics",
                    params={"from": now - 2 * DAY, "to": now, "fields": "cpu_percent,mem_used", "max_points": 3000},
                )
                r1h = await c.get(
                    "/api/v1/hosts/tsdb-a/metrics",
                    params={"from": now - 30 * DAY, "to": now, "fields": "cpu_percent", "max_points": 1000},
                )
        assert r1m.status_code == 200, r1m.text
        assert r1h.status_code == 200, r1h.text
        m, h = r1m.json(), r1h.json()
        assert (m["tier"], m["step"]) == ("metrics_1m", 60.0)
        assert (h["tier"], h["step"]) == ("metrics_1h", 3600.0)
        raw = {
            r["b"]: r
            for r in await fetch(
                dsn,
                "SELECT (floor(extract(epoch FROM time) / 60) * 60)::float8 AS b, cpu_percent::float8 AS cpu, mem_used::float8 AS mem FROM metrics WHERE host = 'tsdb-a'",
            )
        }
        a_frames = [f for f in frames + extra if f.host == "tsdb-a"]
        assert len(m["times"]) == len(a_frames) == len(raw)
        for t, cpu, mem in zip(m["times"], m["series"]["cpu_percent"], m["series"]["mem_used"], strict=True):
            assert cpu == pytest.approx(raw[t]["cpu"], rel=1e-5) and mem == pytest.approx(raw[t]["mem"], rel=1e-9)
        hourly = {
            r["b"]: r["cpu"]
            for r in await fetch(
                dsn,
                "SELECT (floor(extract(epoch FROM time) / 3600) * 3600)::float8 AS b, avg(cpu_percent)::float8 AS cpu FROM metrics WHERE host = 'tsdb-a' GROUP BY 1",
            )
        }
        assert len(h["times"]) == len(hourly) >= 3
        for t, cpu in zip(h["times"], h["series"]["cpu_percent"], strict=True):
            assert cpu == pytest.approx(hourly[t], rel=1e-5)
        assert p.proc.poll() is None, p.logs()[-3000:]
    finally:
        p.stop()
