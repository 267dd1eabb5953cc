"""The gateway over the real pipeline: simulator -> NATS -> ingest -> PostgreSQL -> gateway.
Frames appear in /hosts, history, processes and the SSE stream; a host that stops publishing
turns offline; events and audit records read back; a restarted gateway knows the fleet at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from fleetwatch.simulate import Simulator
from libs.schemas import AppStatus, AuditRecord, encode
from libs.schemas import subjects as s
from tests.support.gateway import running_gateway, sse_events
from tests.support.pipeline import fetchval, poll, start_ingest, wait_until

pytestmark = pytest.mark.timeout(300)


async def test_simulated_fleet_through_ingest_to_the_api(admin, fresh_nats, db_dsn, workdir):
    ingest = start_ingest(fresh_nats, db_dsn, workdir / f"ingest-gw-{uuid.uuid4().hex[:6]}.log")
    try:
        # The gateway creates its own tables; ingest's come from ingest's migrations.
        await wait_until(lambda: poll(db_dsn, "SELECT to_regclass('metrics') IS NOT NULL"), 60, what="ingest schema")
        with running_gateway(fresh_nats, db_dsn, workdir / "gw-e2e", offline_after_s="3") as gw:
            await _scenario(gw, admin, db_dsn)
            gw.stop()
            # A restarted gateway knows every host from the database before any new frame.
            with running_gateway(
                fresh_nats, db_dsn, workdir / "gw-e2e-2", offline_after_s="3", admin_password=gw.admin_password
            ) as gw2:
                async with gw2.async_client("viewer") as c:
                    hosts = (await c.get("/api/v1/hosts")).json()
                assert {h["host"] for h in hosts} >= {"e2e-a", "e2e-b", "e2e-c"}
                a = next(h for h in hosts if h["host"] == "e2e-a")
                assert a["last"] is not None and a["last"]["cpu_percent"] is not None and a["labels"]["sim"] == "true"
    finally:
        ingest.stop()


async def _scenario(gw, admin, db_dsn):
    sim = Simulator(["e2e-a", "e2e-b", "e2e-c"], interval=5.0, seed=3, top_n=20)
    await sim.publish(admin, [sim.info(h) for h in sim.host_ids])
    history = sim.history(60)  # five minutes of every host, in the past
    await sim.publish(admin, history)
    await wait_until(
        lambda: poll(db_dsn, "SELECT count(*) = $1 FROM metrics", len(history)), 60, what="history ingested"
    )

    async with gw.async_client("viewer", timeout=None) as c:
        # History: raw tier for a short range, one point per frame, values as published.
        a_frames = [f for f in history if f.host == "e2e-a"]
        r = await c.get(
            "/api/v1/hosts/e2e-a/metrics",
            params={"from": a_frames[0].ts - 1, "to": a_frames[-1].ts + 1, "fields": "cpu_percent,mem_percent"},
        )
        assert r.status_code == 200, r.text
        h = r.json()
        assert h["tier"] == "metrics" and h["fields"] == ["cpu_percent", "mem_percent"]
        assert len(h["times"]) == len(a_frames)
        assert h["series"]["cpu_percent"] == pytest.approx([f.cpu.percent for f in a_frames], abs=0.01)
        # A long range picks a rollup and never exceeds the point cap (ingest folds rollups
        # every few seconds, after the raw rows are in).
        await wait_until(
            lambda: poll(db_dsn, "SELECT count(*) > 0 FROM metrics_1m WHERE host = 'e2e-a'"),
            60,
            what="1-minute rollup folded",
        )
        r = await c.get("/api/v1/hosts/e2e-a/metrics", params={"from": time.time() - 3 * 86400, "max_points": 50})
        assert r.json()["tier"] == "metrics_1m" and 0 < len(r.json()["times"]) <= 50
        assert (
            await c.get("/api/v1/hosts/e2e-a/metrics", params={"fields": "cpu_percent;drop table"})
        ).status_code == 400

        # Live: an SSE client sees frames of the simulated hosts as they are published.
        async with c.stream("GET", "/api/v1/stream", params={"kinds": "frame", "hosts": "e2e-a,e2e-b"}) as stream:
            live_task = asyncio.create_task(_first_events(stream, 4))
            await asyncio.sleep(0.3)
            for _ in range(2):
                await sim.publish(admin, [sim.frame(hh) for hh in sim.host_ids])
                await asyncio.sleep(0.2)
            live = await asyncio.wait_for(live_task, 20)
        assert {e.json()["host"] for e in live} <= {"e2e-a", "e2e-b"} and len(live) == 4

        hosts = {x["host"]: x for x in (await c.get("/api/v1/hosts")).json()}
        assert {"e2e-a", "e2e-b", "e2e-c"} <= set(hosts)
        assert all(hosts[x]["status"] == "online" for x in sim.host_ids)
        assert hosts["e2e-b"]["labels"]["rack"].startswith("r") and hosts["e2e-b"]["os"].startswith("Debian")
        one = (await c.get("/api/v1/hosts/e2e-b")).json()
        assert (
            one["frame"]["host"] == "e2e-b" and one["frame"]["cpu"]["percent"] == hosts["e2e-b"]["last"]["cpu_percent"]
        )

        # Processes: the latest snapshot, sorted, and one process over time.
        snaps = [sim.snapshot("e2e-c", ts=time.time() - 10), sim.snapshot("e2e-c")]
        await sim.publish(admin, snaps)
        await wait_until(
            lambda: poll(db_dsn, "SELECT count(DISTINCT time) = 2 FROM proc_samples WHERE host='e2e-c'"),
            30,
            what="snapshots",
        )
        procs = (
            await c.get("/api/v1/hosts/e2e-c/processes", params={"sort": "rss", "order": "desc", "limit": 5})
        ).json()
        assert procs["ts"] == pytest.approx(snaps[-1].ts, abs=1e-3) and len(procs["procs"]) == 5
        rss = [p["rss"] for p in procs["procs"]]
        assert rss == sorted(rss, reverse=True) and procs["total"] == snaps[-1].total
        pid = procs["procs"][0]["pid"]
        ph = (await c.get(f"/api/v1/hosts/e2e-c/processes/{pid}/history", params={"from": time.time() - 600})).json()
        assert len(ph["times"]) == 2 and ph["rss"][-1] == rss[0]

        # Offline: e2e-c stops publishing, the others go on.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await sim.publish(admin, [sim.frame("e2e-a"), sim.frame("e2e-b")])
            hosts = {x["host"]: x["status"] for x in (await c.get("/api/v1/hosts")).json()}
            if hosts["e2e-c"] == "offline":
                break
            await asyncio.sleep(0.5)
        assert hosts["e2e-c"] == "offline" and hosts["e2e-a"] == "online" and hosts["e2e-b"] == "online"
        offline = (await c.get("/api/v1/hosts", params={"status": "offline"})).json()
        assert [x["host"] for x in offline] == ["e2e-c"]
        m = (await c.get("/metrics")).text
        assert 'fleetwatch_host_up{host="e2e-c"} 0' in m and 'fleetwatch_host_up{host="e2e-a"} 1' in m
        assert 'fleetwatch_host_cpu_percent{host="e2e-a"}' in m

    # Events and audit, written by ingest, read through the API.
    now = time.time()
    await admin.jetstream().publish(
        s.apps("e2e-a"), encode(AppStatus(host="e2e-a", app="web", state="crashed", ts=now, exit_code=1))
    )
    await admin.jetstream().publish(
        s.audit("e2e-a"),
        encode(
            AuditRecord(
                id=uuid.uuid4().hex,
                ts=now,
                host="e2e-a",
                actor="operator1",
                action="apps.restart",
                target="web",
                params={"password": "***"},
            )
        ),
    )
    await wait_until(
        lambda: fetchval(
            db_dsn,
            "SELECT (SELECT count(*) FROM app_events) + (SELECT count(*) FROM audit_log WHERE actor = 'operator1') = 2",
        ),
        30,
        what="events",
    )
    async with gw.async_client("operator") as c:
        ev = (await c.get("/api/v1/events", params={"kind": "app", "host": "e2e-a"})).json()
        assert ev["items"][0]["data"]["state"] == "crashed" and ev["items"][0]["data"]["app"] == "web"
        au = (await c.get("/api/v1/audit", params={"actor": "operator1"})).json()
        assert au["items"][0]["action"] == "apps.restart" and au["items"][0]["params"] == {"password": "***"}
        assert (await c.get("/api/v1/audit", params={"actor": "nobody"})).json()["items"] == []


async def _first_events(stream, n):
    out = []
    async for ev in sse_events(stream):
        out.append(ev)
        if len(out) >= n:
            return out
