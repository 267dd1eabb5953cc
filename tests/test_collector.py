"""collector: a real frame from this machine through real NATS and ingest into PostgreSQL, the
on-demand sample, host info in the KV bucket, and the parts (rates, GPUs, processes, buffer)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import Codec, HostInfo, MetricFrame
from services.collector.gpu import Gpus
from services.collector.outbox import Outbox
from services.collector.processes import ProcessTable
from services.collector.rates import Rates
from tests.support.pipeline import fetch, poll, start_collector, start_ingest, wait_until

HOST = "local"


async def test_frame_from_this_machine_lands_with_psutil_values(fresh_nats, db_dsn, workdir):
    admin = await connect(fresh_nats.settings("admin"), "test-collector", retry_forever=False)
    await provision(admin)
    ingest = start_ingest(fresh_nats, db_dsn, workdir / "collector-e2e-ingest.log")
    coll = start_collector(
        fresh_nats,
        HOST,
        workdir / "collector-e2e.log",
        FLEETWATCH_COLLECTOR_INTERVAL="1",
        FLEETWATCH_COLLECTOR_PROCS_INTERVAL="2",
    )
    try:
        await wait_until(
            lambda: poll(db_dsn, "SELECT count(*) >= 3 FROM metrics WHERE host = $1", HOST),
            60,
            what=f"frames ({coll.logs()[-2000:]})",
        )
        m = (await fetch(db_dsn, "SELECT * FROM metrics WHERE host = $1 ORDER BY time DESC LIMIT 1", HOST))[0]
        vm = psutil.virtual_memory()
        assert m["mem_total"] == vm.total
        assert m["mem_percent"] == pytest.approx(vm.percent, abs=5)
        assert m["cpu_count"] == psutil.cpu_count()
        assert 0 <= m["cpu_percent"] <= 100 and len(m["cpu_per_core"]) == psutil.cpu_count()
        assert m["procs_total"] == pytest.approx(len(psutil.pids()), rel=0.5)
        assert m["uptime"] == pytest.approx(m["time"].timestamp() - psutil.boot_time(), abs=5)
        if not os.path.exists("/dev/nvidia0"):  # no driver: the real NVML path yields no GPUs
            assert m["gpu_count"] == 0
        ifaces = {i["name"] for i in json.loads(m["net_ifaces"])}
        assert ifaces == set(psutil.net_io_counters(pernic=True))
        disks = {
            r["mount"]: r
            for r in await fetch(db_dsn, "SELECT * FROM metrics_disk WHERE host = $1 AND time = $2", HOST, m["time"])
        }
        root = psutil.disk_usage("/")
        assert "/" in disks
        assert disks["/"]["total"] == root.total
        assert disks["/"]["used"] == pytest.approx(root.used, rel=0.02)
        assert disks["/"]["percent"] == pytest.approx(root.percent, abs=1)
        assert m["disk_max_percent"] == pytest.approx(max(d["percent"] for d in disks.values()))
        # Frames of one run carry consecutive sequence numbers.
        seqs = [r["seq"] for r in await fetch(db_dsn, "SELECT seq FROM metrics WHERE host = $1 ORDER BY seq", HOST)]
        assert seqs == list(range(1, len(seqs) + 1))

        # Process snapshots and host info land too.
        await wait_until(
            lambda: poll(db_dsn, "SELECT count(*) > 0 FROM proc_samples WHERE host = $1", HOST),
            30,
            what="process snapshot",
        )
        mine = await fetch(db_dsn, "SELECT * FROM proc_samples WHERE host = $1 AND pid = $2", HOST, coll.proc.pid)
        assert not mine or mine[0]["name"].startswith("python")
        h = await wait_until(
            lambda: poll(db_dsn, "SELECT cpu_count FROM hosts WHERE host = $1 AND info_time IS NOT NULL", HOST),
            30,
            what="host row",
        )
        assert h == psutil.cpu_count()
        kv = await admin.jetstream().key_value("fleet_hosts")
        info = Codec(HostInfo).decode((await kv.get(HOST)).value)
        assert info.host == HOST and info.mem_total == vm.total

        # The seeds' "metrics now": a request answered with a fresh frame.
        reply = await admin.request(f"fleet.sample.{HOST}", b"", timeout=10)
        fresh = Codec(MetricFrame).decode(reply.data)
        assert fresh.host == HOST and fresh.mem.total == vm.total and fresh.seq == 0
        assert abs(fresh.ts - time.time()) < 5
        assert coll.stop() == 0  # SIGTERM: a clean stop
    finally:
        coll.stop()
        ingest.stop()
        await admin.close()


def test_rates_survive_counter_reset():
    r = Rates()
    assert r.rate("eth0", 1000, 1.0) == 0.0  # no baseline yet
    assert r.rate("eth0", 3000, 2.0) == 1000.0
    # The counter went back to a small value (driver reload, 32-bit wrap): count since reset.
    assert r.rate("eth0", 500, 1.0) == 500.0
    assert r.rate("eth0", 1500, 1.0) == 1000.0
    r.forget_missing(set())
    assert r.rate("eth0", 5000, 1.0) == 0.0


def test_fake_nvml_gpus_and_one_failing_call_loses_only_that_field():
    g = Gpus("tests.support.fake_nvml")
    assert g.available and g.driver == "550.54.15"
    stats = g.sample()
    assert [s.index for s in stats] == [0, 1]
    assert stats[0].power_w == 250.0 and stats[0].util_percent is not None
    assert stats[1].power_w is None  # unsupported on that card
    assert stats[1].util_percent is not None and stats[1].mem_used == 80 * 1024**3 // 5 and stats[1].temperature == 51
    assert stats[0].name == "NVIDIA Fake 80GB" and stats[0].uuid == "GPU-fake-0"
    assert Gpus.process_memory(stats) == {4242: 1024**3, 4243: 2 * 1024**3}
    assert [i.uuid for i in g.info()] == ["GPU-fake-0", "GPU-fake-1"]


def test_no_nvml_means_no_gpus_not_an_error(caplog):
    caplog.set_level("INFO")
    assert Gpus("no_such_nvml_binding").sample() == []
    assert "no GPUs" in caplog.text
    # The real binding on a machine without an NVIDIA driver: still no error.
    if not os.path.exists("/dev/nvidia0"):
        assert Gpus("pynvml").sample() == []


def test_process_table_top_n_reads_own_process():
    t = ProcessTable()
    t.scan(with_memory=True)
    busy = sum(i * i for i in range(300_000))  # some CPU time of our own
    counts = t.scan(with_memory=True)
    assert counts.total == len(t) and counts.total > 5 and busy > 0
    assert (
        counts.running + counts.sleeping + counts.idle + counts.stopped + counts.zombie + counts.other == counts.total
    )
    top = t.top(3)
    assert 1 <= len(top) <= 6  # top 3 by CPU merged with top 3 by memory
    assert os.getpid() in {p.pid for p in t.top(500)}
    me = next(p for p in t.top(500) if p.pid == os.getpid())
    assert me.rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
    assert me.create_time == pytest.approx(psutil.Process().create_time(), abs=1)
    assert me.user and me.cmdline and me.threads >= 1


async def test_outbox_is_bounded_and_drops_the_oldest(nats_stack):
    nc = await connect(nats_stack.settings("admin"), "outbox-test", retry_forever=False)
    try:
        box = Outbox(nc, "t", capacity=3)
        for i in range(5):
            box.put("fleet.metrics.local", b"{}", f"local:1:{i}")
        assert box.dropped == 2 and [i.msg_id for i in box.items] == ["local:1:2", "local:1:3", "local:1:4"]
    finally:
        await nc.close()


async def test_collector_with_nvml_fake_reports_gpus_and_their_processes(fresh_nats, workdir):
    """The production NVML code path, run against the fake module in a real collector process."""
    admin = await connect(fresh_nats.settings("admin"), "test-gpu", retry_forever=False)
    await provision(admin)
    coll = start_collector(
        fresh_nats, "host-a", workdir / "collector-gpu.log", FLEETWATCH_COLLECTOR_NVML_MODULE="tests.support.fake_nvml"
    )
    try:

        async def sample():
            try:
                return Codec(MetricFrame).decode((await admin.request("fleet.sample.host-a", b"", timeout=2)).data)
            except Exception:
                return None

        frame = await wait_until(sample, 30, what="a sample reply")
        assert [g.index for g in frame.gpus] == [0, 1]
        assert frame.gpus[0].power_w == 250.0 and frame.gpus[1].power_w is None
        assert frame.gpus[1].util_percent is not None and frame.gpus[1].processes[0].pid == 4243
        kv = await admin.jetstream().key_value("fleet_hosts")
        info = await wait_until(lambda: _kv_get(kv, "host-a"), 20, what="host info")
        assert [g.uuid for g in info.gpus] == ["GPU-fake-0", "GPU-fake-1"] and info.gpus[0].driver == "550.54.15"
        assert coll.stop() == 0
    finally:
        coll.stop()
        await admin.close()


async def _kv_get(kv, key):
    try:
        return Codec(HostInfo).decode((await kv.get(key)).value)
    except Exception:
        return None


async def test_snapshot_holds_every_process_and_an_idle_one_has_history(fresh_nats, db_dsn, workdir):
    """Default settings: a snapshot stores every process (up to 500), not a top 40, so
    `?limit=500` lists them all and an idle process (a sleeping child) has a history."""
    from tests.support.gateway import running_gateway

    admin = await connect(fresh_nats.settings("admin"), "test-collector-all", retry_forever=False)
    await provision(admin)
    idle = subprocess.Popen(["sleep", "600"])
    ingest = start_ingest(fresh_nats, db_dsn, workdir / "collector-all-ingest.log")
    coll = start_collector(fresh_nats, HOST, workdir / "collector-all.log", FLEETWATCH_COLLECTOR_PROCS_INTERVAL="1")
    try:
        q = "SELECT count(DISTINCT time) >= 3 FROM proc_samples WHERE host = 'local' AND pid = $1"
        await wait_until(lambda: poll(db_dsn, q, idle.pid), 90, what=f"idle process stored ({coll.logs()[-2000:]})")
        last = (
            await fetch(
                db_dsn,
                """SELECT count(*) AS n, max(procs_total) AS total FROM proc_samples
                    WHERE host = 'local' AND time = (SELECT max(time) FROM proc_samples WHERE host = 'local')""",
            )
        )[0]
        assert last["total"] > 40 and last["n"] == min(last["total"], 500)
        with running_gateway(fresh_nats, db_dsn, workdir / "gw-all") as gw:
            async with gw.async_client("viewer") as c:
                for _ in range(2):  # second read: same truthful counts
                    r = (await c.get("/api/v1/hosts/local/processes", params={"limit": 500})).json()
                    assert len(r["procs"]) == r["stored"] == min(r["total"], 500) and r["total"] > 40
                    r5 = (await c.get("/api/v1/hosts/local/processes", params={"limit": 5})).json()
                    assert len(r5["procs"]) == 5 and r5["stored"] == r["stored"]
                h = (
                    await c.get(f"/api/v1/hosts/local/processes/{idle.pid}/history", params={"from": time.time() - 600})
                ).json()
                assert h["name"] == "sleep" and len(h["times"]) >= 3 and h["tier"] == "proc_samples"
                assert len(h["cpu_percent"]) == len(h["rss"]) == len(h["threads"]) == len(h["times"])
                assert max(h["cpu_percent"]) < 5 and h["threads"][-1] == 1 and h["rss"][-1] > 0
                # A coarser step: fewer, wider buckets over the same samples.
                h2 = (
                    await c.get(
                        f"/api/v1/hosts/local/processes/{idle.pid}/history",
                        params={"from": time.time() - 600, "step": 600},
                    )
                ).json()
                assert h2["step"] == 600 and 1 <= len(h2["times"]) <= 2
                bad = await c.get(f"/api/v1/hosts/local/processes/{idle.pid}/history", params={"step": 0})
                assert bad.status_code == 400
    finally:
        coll.stop()
        ingest.stop()
        idle.kill()
        idle.wait()
        await admin.close()
