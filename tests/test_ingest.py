"""ingest against a real nats-server and PostgreSQL: frames, snapshots, host info, events,
dead letters, rollups, migrations. Each test gets its own NATS server (the durable consumers
are shared state) and its own database."""

from __future__ import annotations

import json
import time
from datetime import UTC

import asyncpg
import pytest

from fleetwatch.simulate import Simulator
from libs.schemas import AlertEvent, AppStatus, AuditRecord, Codec, HealthResult, ReplicationStatus, UserChange, encode
from libs.schemas.streams import H_REASON, H_SUBJECT
from tests.support.pipeline import fetch, fetchval, poll, start_ingest, wait_until


@pytest.fixture
def ingest(fresh_nats, db_dsn, workdir, request):
    procs = []

    def start(**extra):
        p = start_ingest(fresh_nats, db_dsn, workdir / f"ingest-{request.node.name}-{len(procs)}.log", **extra)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


async def test_frames_snapshots_and_hosts_land_and_rollups_match_raw(admin, ingest, db_dsn):
    sim = Simulator(12, seed=7)
    # 40 rounds 5 s apart: several minute buckets, partly shared with the hour bucket.
    frames = sim.history(40)
    snaps = [sim.snapshot(h) for h in sim.host_ids]
    await sim.publish(admin, frames + snaps + [sim.info(h) for h in sim.host_ids])
    p = ingest()
    await wait_until(lambda: poll(db_dsn, "SELECT count(*) = $1 FROM metrics", len(frames)), 60, what="frames")
    assert await fetchval(db_dsn, "SELECT count(*) FROM metrics_disk") == 2 * len(frames)
    gpu_frames = sum(len(f.gpus) for f in frames)
    assert await fetchval(db_dsn, "SELECT count(*) FROM metrics_gpu") == gpu_frames and gpu_frames > 0
    await wait_until(
        lambda: fetchval(db_dsn, "SELECT count(*) = $1 FROM proc_samples", sum(len(s.procs) for s in snaps)),
        30,
        what="snapshots",
    )
    await wait_until(
        lambda: fetchval(
            db_dsn, "SELECT count(*) = 12 FROM hosts WHERE info_time IS NOT NULL AND last_seen IS NOT NULL"
        ),
        30,
        what="hosts",
    )

    # One frame, field by field.
    f = frames[-1]
    r = (await fetch(db_dsn, "SELECT * FROM metrics WHERE host = $1 AND seq = $2", f.host, f.seq))[0]
    assert r["time"].timestamp() == pytest.approx(f.ts, abs=1e-5)
    assert r["cpu_percent"] == pytest.approx(f.cpu.percent, rel=1e-5)
    assert r["mem_percent"] == pytest.approx(f.mem.percent, rel=1e-5)
    assert r["net_bytes_recv"] == pytest.approx(f.net.bytes_recv)
    assert r["disk_max_percent"] == pytest.approx(max(d.percent for d in f.disks), rel=1e-5)
    assert r["procs_total"] == f.procs.total and r["cpu_count"] == f.cpu.count
    assert json.loads(r["net_ifaces"])[0]["name"] == "eth0"
    h = (await fetch(db_dsn, "SELECT * FROM hosts WHERE host = $1", f.host))[0]
    assert h["cpu_count"] == f.cpu.count and json.loads(h["labels"])["sim"] == "true"

    # Rollups answer the same averages as the raw rows for the same window (once folded:
    # every FLEETWATCH_INGEST_ROLLUP_EVERY seconds).
    await wait_until(lambda: _folded(db_dsn, len(frames)), 30, what="rollups folded")
    for table, width in (("metrics_1m", "1 minute"), ("metrics_1h", "1 hour")):
        pairs = await fetch(
            db_dsn,
            f"""SELECT r.host, r.time, r.samples, r.cpu_percent, r.mem_percent, r.net_bytes_recv, r.cpu_percent_max, r.gpu_util_percent,
                       raw.n, raw.cpu, raw.mem, raw.net, raw.cpu_max, raw.gpu
                FROM {table} r JOIN (
                    SELECT host, date_bin(INTERVAL '{width}', time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS b, count(*) AS n,
                           avg(cpu_percent) AS cpu, avg(mem_percent) AS mem, avg(net_bytes_recv) AS net, max(cpu_percent) AS cpu_max,
                           avg(gpu_util_percent) AS gpu
                    FROM metrics GROUP BY 1, 2) raw ON raw.host = r.host AND raw.b = r.time""",
        )
        assert sum(x["samples"] for x in pairs) == len(frames)
        assert any(x["gpu"] is None for x in pairs) and any(x["gpu"] is not None for x in pairs)
        assert await fetchval(db_dsn, f"SELECT count(*) FROM {table}") == len(pairs)
        for x in pairs:
            assert x["samples"] == x["n"]
            assert x["cpu_percent"] == pytest.approx(x["cpu"], rel=1e-4)
            assert x["mem_percent"] == pytest.approx(x["mem"], rel=1e-4)
            assert x["net_bytes_recv"] == pytest.approx(x["net"], rel=1e-6)
            assert x["cpu_percent_max"] == pytest.approx(x["cpu_max"], rel=1e-5)
            # Hosts without GPUs have NULL there, in the raw rows and in the rollup alike.
            assert (x["gpu_util_percent"] is None) == (x["gpu"] is None)
            if x["gpu"] is not None:
                assert x["gpu_util_percent"] == pytest.approx(x["gpu"], rel=1e-4)
    assert p.proc.poll() is None


async def _folded(dsn: str, n: int) -> bool:
    """Plain path: every frame folded into both rollups (TimescaleDB has no rollup_pending)."""
    if await fetchval(dsn, "SELECT to_regclass('rollup_pending') IS NOT NULL") and await fetchval(
        dsn, "SELECT count(*) FROM rollup_pending"
    ):
        return False
    got = await fetch(
        dsn, "SELECT (SELECT sum(samples) FROM metrics_1m) AS m, (SELECT sum(samples) FROM metrics_1h) AS h"
    )
    return (got[0]["m"], got[0]["h"]) == (n, n)


async def test_garbage_is_dead_lettered_and_ingest_keeps_going(admin, ingest, db_dsn):
    js = admin.jetstream()
    dl = await js.pull_subscribe("fleet.deadletter.ingest", durable="t_dl", stream="DEADLETTER")
    ingest()
    sim = Simulator(["host-a"], seed=3)
    good = sim.history(3)
    await js.publish("fleet.metrics.x", b"\x00garbage{", headers={"Nats-Msg-Id": "g1"})
    forged = sim.frame("host-a")
    await js.publish("fleet.metrics.host-b", Codec(type(forged)).encode(forged), headers={"Nats-Msg-Id": "g2"})
    # Valid JSON and valid types, but text PostgreSQL cannot store (a NUL character): the
    # database refuses the batch, ingest splits it until that frame is alone.
    huge = json.loads(encode(sim.frame("host-a")))
    huge["disks"][0]["mount"] = "/data\u0000x"
    await js.publish("fleet.metrics.host-a", json.dumps(huge).encode(), headers={"Nats-Msg-Id": "g3"})
    await sim.publish(admin, good)

    await wait_until(lambda: poll(db_dsn, "SELECT count(*) = 3 FROM metrics"), 60, what="good frames")
    got = await dl.fetch(3, timeout=20)
    reasons = {m.headers[H_SUBJECT]: m.headers[H_REASON] for m in got}
    assert reasons.keys() == {"fleet.metrics.x", "fleet.metrics.host-b", "fleet.metrics.host-a"}
    assert "malformed JSON" in reasons["fleet.metrics.x"]
    assert "does not match the subject" in reasons["fleet.metrics.host-b"]
    assert "rejected by the database" in reasons["fleet.metrics.host-a"]
    assert any(m.data == b"\x00garbage{" for m in got)
    # Nothing is left pending: every message, good or bad, was acked.
    await wait_until(lambda: _acked(js), 20, what="all acked")
    assert await fetchval(db_dsn, "SELECT count(*) FROM metrics") == 3


async def _acked(js):
    info = await js.consumer_info("METRICS", "ingest_metrics")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_events_and_audit_land_once(admin, ingest, db_dsn):
    js = admin.jetstream()
    now = time.time()
    msgs = [
        (
            "fleet.apps.host-a",
            AppStatus(host="host-a", app="web", state="crashed", ts=now, previous="running", exit_code=1),
        ),
        (
            "fleet.health.api",
            HealthResult(
                check="api",
                target="http://127.0.0.1:1/health",
                ts=now,
                ok=False,
                error="refused",
                consecutive_failures=2,
            ),
        ),
        (
            "fleet.alerts.host-a.cpu",
            AlertEvent(
                fingerprint="fp1",
                rule="cpu",
                host="host-a",
                state="firing",
                ts=now,
                since=now - 60,
                value=97.0,
                threshold=90.0,
            ),
        ),
        (
            "fleet.audit.host-a",
            AuditRecord(
                id="a-1",
                ts=now,
                host="host-a",
                actor="alice",
                action="apps.stop",
                target="web",
                params={"signal": "TERM"},
            ),
        ),
        ("fleet.replica.host-a", ReplicationStatus(host="host-a", ts=now, ok=True, added=2, total=5)),
        ("fleet.users.changed", UserChange(ts=now, op="created", username="bob")),
    ]
    for i, (subj, m) in enumerate(msgs):
        await js.publish(subj, encode(m), headers={"Nats-Msg-Id": f"e{i}"})
    # The same events again under new message ids (a publisher retrying after the dedupe window).
    for i, (subj, m) in enumerate(msgs):
        await js.publish(subj, encode(m), headers={"Nats-Msg-Id": f"again{i}"})
    ingest()
    tables = ("app_events", "health_results", "alert_events", "audit_log", "replica_status")

    async def all_there():
        counts = [await poll(db_dsn, f"SELECT count(*) FROM {t}") for t in tables]
        return counts == [1] * len(tables) and await _acked_all(js)

    await wait_until(all_there, 60, what="events")
    a = (await fetch(db_dsn, "SELECT * FROM audit_log"))[0]
    assert a["actor"] == "alice" and json.loads(a["params"]) == {"signal": "TERM"}
    e = (await fetch(db_dsn, "SELECT * FROM app_events"))[0]
    assert e["state"] == "crashed" and e["exit_code"] == 1


async def _acked_all(js):
    for stream, durable in (("EVENTS", "ingest_events"), ("AUDIT", "ingest_audit")):
        info = await js.consumer_info(stream, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def test_migrations_are_idempotent_and_retention_drops_old_partitions(db_dsn):
    from datetime import datetime, timedelta

    from services.ingest import maintenance, schema

    conn = await asyncpg.connect(db_dsn)
    try:
        assert await schema.apply(conn, "partitions") == [
            "0001_history.py",
            "0002_rollup_pending.py",
            "0003_brin_time.py",
        ]
        assert await schema.apply(conn, "partitions") == []
        # Fleet-wide time indexes are BRIN on the raw tables, on partitions made before and after.
        await conn.execute(
            "SELECT fleetwatch_ensure_partition('metrics'::regclass, interval '1 day', now() + interval '9 days')"
        )
        methods = await conn.fetch(
            """SELECT c.relname, am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
                JOIN pg_class t ON t.oid = i.indrelid JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
               WHERE t.relname LIKE 'metrics_p%' AND i.indnatts = 1 AND a.attname = 'time'"""
        )
        assert len(methods) >= 6 and {m["amname"] for m in methods} == {"brin"}, methods
        st = await schema.storage(conn)
        assert st.backend == "partitions" and st.raw_retention_s == 14 * 86400
        now = datetime.now(UTC)
        done = await maintenance.run_once(conn, st, 90, now=now)
        assert done["dropped"] == []
        parts = lambda t: conn.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", t)  # noqa: E731
        assert await parts("metrics") >= 5
        # Fifteen days later, today's raw partitions are past retention; the rollups are not.
        later = await maintenance.run_once(conn, st, 90, now=now + timedelta(days=15))
        today = f"metrics_p{now:%Y%m%d}"
        assert today in later["dropped"]
        assert not any(n.startswith("metrics_1m") or n.startswith("metrics_1h") for n in later["dropped"])
    finally:
        await conn.close()


async def test_rollup_fold_takes_committed_partials_once(db_dsn):
    """A fold moves what is committed in rollup_pending into both rollups, exactly once: a
    batch still in its transaction stays for the next fold, and only one fold runs at a time."""
    from datetime import datetime

    from services.ingest import rollups, schema
    from services.ingest.config import IngestConfig

    with pytest.raises(ValueError, match="ack_wait"):
        IngestConfig(ack_wait=5.0, keepalive=10.0)
    a, b = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        await schema.apply(a, "partitions")
        minute = datetime.fromtimestamp((time.time() // 60) * 60, UTC)
        cols = ", ".join(rollups.ROLLUP_COLUMNS)
        nulls = [None] * (len(rollups.ROLLUP_COLUMNS) - 5)
        put = f"INSERT INTO rollup_pending ({cols}) VALUES ({', '.join(f'${i + 1}' for i in range(len(rollups.ROLLUP_COLUMNS)))})"
        # cpu_percent (avg) and cpu_percent_max: 3 samples averaging 10, then 1 sample of 50.
        await a.execute(put, minute, "h1", 3, 10.0, 20.0, *nulls)
        tx = b.transaction()
        await tx.start()
        await b.execute(put, minute, "h1", 1, 50.0, 50.0, *nulls)
        assert await rollups.fold(a) == 3  # the open transaction's row is not visible yet
        assert await rollups.fold(a) == 0
        async with a.transaction():  # another process folding now: this one skips
            await a.execute("SELECT pg_advisory_xact_lock($1)", rollups.FOLD_LOCK)
            assert await rollups.fold(b) is None
        await tx.commit()
        assert await rollups.fold(a) == 1
        for table in ("metrics_1m", "metrics_1h"):
            r = await a.fetchrow(f"SELECT samples, cpu_percent, cpu_percent_max FROM {table}")
            assert (r["samples"], r["cpu_percent"], r["cpu_percent_max"]) == (
                4,
                pytest.approx(20.0),
                pytest.approx(50.0),
            )
        assert await a.fetchval("SELECT count(*) FROM rollup_pending") == 0
    finally:
        await a.close()
        await b.close()
