"""ingest under faults: killed mid-stream, database stopped. Exactly the published frames end
up stored: none lost, none twice (rollups included)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from fleetwatch.simulate import Simulator
from libs.embedded.stack import make_private_dir, start_postgres
from libs.runtime import connect
from libs.runtime.jetstream import provision
from tests.support.pipeline import fetch, fetchval, poll, start_ingest, wait_until


async def _drained(js) -> bool:
    info = await js.consumer_info("METRICS", "ingest_metrics")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _assert_exactly(dsn: str, frames) -> None:
    rows = await fetch(dsn, "SELECT host, boot, seq FROM metrics")
    assert len(rows) == len(frames)
    assert {(r["host"], r["boot"], r["seq"]) for r in rows} == {(f.host, f.boot, f.seq) for f in frames}

    # Rollups counted each frame once, even those delivered twice (once folded: a few seconds).
    async def folded():
        got = await fetchval(
            dsn,
            "SELECT ARRAY[(SELECT sum(samples) FROM metrics_1m), (SELECT sum(samples) FROM metrics_1h), (SELECT count(*) FROM rollup_pending)]",
        )
        return got == [len(frames), len(frames), 0]

    await wait_until(folded, 60, what="rollups folded")


@pytest.mark.slow
async def test_kill9_mid_50k_frames_then_restart_stores_each_exactly_once(fresh_nats, db_dsn, workdir):
    admin = await connect(fresh_nats.settings("admin"), "test-kill9", retry_forever=False)
    await provision(admin)
    js = admin.jetstream()
    sim = Simulator(500, seed=11)
    frames = sim.history(100)  # 50 000 frames
    # A short ack wait (production: 30 s) so the killed process's batches come back soon.
    quick = {"FLEETWATCH_INGEST_ACK_WAIT": "4", "FLEETWATCH_INGEST_KEEPALIVE": "1"}
    first = start_ingest(fresh_nats, db_dsn, workdir / "kill9-a.log", **quick)
    second = None
    try:
        publishing = asyncio.create_task(sim.publish(admin, frames, in_flight=512))
        n = await wait_until(
            lambda: poll(db_dsn, "SELECT CASE WHEN count(*) >= 8000 THEN count(*) END FROM metrics"),
            120,
            what="ingest under way",
        )
        first.kill()  # SIGKILL: no drain, batches in flight are neither committed nor acked
        assert n < len(frames)
        assert await publishing == len(frames)
        second = start_ingest(fresh_nats, db_dsn, workdir / "kill9-b.log", **quick)
        # Unacked messages come back after the consumer's ack wait.
        assert (await js.consumer_info("METRICS", "ingest_metrics")).config.ack_wait == 4
        await wait_until(lambda: _drained(js), 150, interval=1, what="consumer drained")
        await _assert_exactly(db_dsn, frames)
    finally:
        first.kill()
        if second:
            second.stop()
        await admin.close()


@pytest.mark.slow
async def test_postgres_stopped_10s_under_load_nothing_lost(fresh_nats, workdir):
    root = make_private_dir(prefix="fleetwatch-pgstop-")
    pg = start_postgres(root)
    admin = await connect(fresh_nats.settings("admin"), "test-pgstop", retry_forever=False)
    ingest = None
    try:
        name = f"t_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(pg.dsn("postgres"))
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        dsn = pg.dsn(name)
        await provision(admin)
        js = admin.jetstream()
        ingest = start_ingest(fresh_nats, dsn, workdir / "pgstop.log")
        sim = Simulator(100, seed=5, interval=0.5)
        published = []

        async def load(seconds: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                batch = [sim.frame(h) for h in sim.host_ids]
                await sim.publish(admin, batch)
                published.extend(batch)
                await asyncio.sleep(0.5)

        await load(3)
        await wait_until(lambda: poll(dsn, "SELECT count(*) > 0 FROM metrics"), 60, what="first frames")
        pg.stop()
        await load(10)  # frames keep coming while the database is away
        pg.start()
        await load(2)
        await wait_until(lambda: _drained(js), 120, interval=1, what="consumer drained")
        await _assert_exactly(dsn, published)
        logs = ingest.logs()
        assert "database unavailable" in logs and "database back" in logs
        assert ingest.proc.poll() is None
    finally:
        if ingest:
            ingest.stop()
        await admin.close()
        pg.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
