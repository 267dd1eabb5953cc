"""Several ingest processes share one durable consumer; the simulator CLI feeds a fleet."""

from __future__ import annotations

import json
import subprocess
import sys

from fleetwatch.simulate import Simulator
from libs.runtime import connect
from libs.runtime.jetstream import provision
from tests.conftest import ROOT, service_env
from tests.support.pipeline import fetchval, poll, start_ingest, wait_until


def _stopped_stats(logs: str) -> dict:
    for line in logs.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("msg") == "consumer stopped" and rec.get("consumer") == "ingest_metrics":
                return rec
    raise AssertionError(f"no stop record in: {logs[-2000:]}")


async def test_two_ingest_processes_share_the_work(fresh_nats, db_dsn, workdir):
    admin = await connect(fresh_nats.settings("admin"), "test-share", retry_forever=False)
    await provision(admin)
    a = start_ingest(fresh_nats, db_dsn, workdir / "share-a.log", FLEETWATCH_INGEST_BATCH="100")
    await wait_until(lambda: poll(db_dsn, "SELECT true FROM history_storage"), 60, what="migrations")
    b = start_ingest(fresh_nats, db_dsn, workdir / "share-b.log", FLEETWATCH_INGEST_BATCH="100")
    try:
        await wait_until(lambda: _bound(admin, 2), 30, what="both processes pulling")
        sim = Simulator(100, seed=4)
        frames = sim.history(40)
        await sim.publish(admin, frames)
        await wait_until(lambda: poll(db_dsn, "SELECT count(*) = $1 FROM metrics", len(frames)), 90, what="all frames")
    finally:
        assert a.stop() == 0 and b.stop() == 0  # SIGTERM: a clean stop
        await admin.close()
    sa, sb = _stopped_stats(a.logs()), _stopped_stats(b.logs())
    assert sa["messages"] > 0 and sb["messages"] > 0, (sa, sb)
    assert sa["messages"] + sb["messages"] >= len(frames)
    assert await fetchval(db_dsn, "SELECT sum(samples) FROM metrics_1m") == len(frames)


async def _bound(admin, n: int) -> bool:
    info = await admin.jetstream().consumer_info("METRICS", "ingest_metrics")
    return (info.num_waiting or 0) >= n


async def test_simulate_command_publishes_a_fleet(fresh_nats):
    env = service_env(**fresh_nats.env("simulator"))
    admin = await connect(fresh_nats.settings("admin"), "test-sim", retry_forever=False)
    await provision(admin)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "fleetwatch", "simulate", "--hosts", "4", "--interval", "0.3", "--rounds", "3"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        js = admin.jetstream()
        info = await js.stream_info("METRICS", subjects_filter="fleet.>")
        per = info.state.subjects or {}
        assert per.get("fleet.metrics.sim-00000") == 3 and per.get("fleet.metrics.sim-00003") == 3
        assert per.get("fleet.procs.sim-00001") == 1 and per.get("fleet.hosts.sim-00002") == 1
        kv = await js.key_value("fleet_hosts")
        assert json.loads((await kv.get("sim-00003")).value)["host"] == "sim-00003"
        bad = subprocess.run(
            [sys.executable, "-m", "fleetwatch", "simulate", "--hosts", "0"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 2 and "--hosts" in bad.stderr
    finally:
        await admin.close()


async def test_simulate_as_each_hosts_agent(fresh_nats):
    """With --credentials, a host that has agent credentials publishes as that agent, whose
    permissions cover only its own subjects; the frames still land."""
    env = service_env(**fresh_nats.env("simulator"))
    admin = await connect(fresh_nats.settings("admin"), "test-sim-agents", retry_forever=False)
    await provision(admin)
    try:
        creds = fresh_nats.root / "nats" / "credentials.json"
        r = subprocess.run(
            [sys.executable, "-m", "fleetwatch", "simulate", "--host-ids", "host-a,host-b,other", "--credentials", str(creds), "--interval", "0.2", "--rounds", "2"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        info = await admin.jetstream().stream_info("METRICS", subjects_filter="fleet.metrics.>")
        assert info.state.subjects == {"fleet.metrics.host-a": 2, "fleet.metrics.host-b": 2, "fleet.metrics.other": 2}
    finally:
        await admin.close()
