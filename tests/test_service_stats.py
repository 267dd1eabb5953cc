"""Service stats: every service answers `$SRV.PING|INFO|STATS` as a NATS micro service with its
own counters in the STATS data, and the gateway's `/metrics` gathers them.

Real nats-server (with the generated per-host permissions), real PostgreSQL, the real services
as subprocesses: a collector publishes real frames, ingest stores them and the alerter evaluates
them, a malformed frame is dead-lettered by both, a malformed control request reaches the commander, and the counters move by
what happened.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import asyncpg
import httpx
import nats
import nats.errors
import pytest

from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import Codec, subjects
from libs.schemas.servicestats import ServiceCounters
from tests.conftest import service_env
from tests.support.commander import CommanderProcess
from tests.support.gateway import start_gateway
from tests.support.natsprobe import delivered
from tests.support.pipeline import Proc, start_collector, start_ingest, wait_until

HOST = "host-a"
COUNTERS = Codec(ServiceCounters)


async def gather(nc, subject: str, window: float = 0.5) -> list[dict]:
    """Every reply to one micro discovery request within `window`."""
    got: list[dict] = []

    async def cb(msg):
        if msg.data:  # not the server's empty no-responders status
            got.append(json.loads(msg.data))

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=cb)
    await nc.publish(subject, b"", reply=inbox)
    await nc.flush()
    await asyncio.sleep(window)
    await sub.unsubscribe()
    return got


async def counters(nc, kind: str, host: str = "") -> ServiceCounters | None:
    """The ServiceCounters of the one instance of `kind` (on `host`), from `$SRV.STATS.<kind>`."""
    for r in await gather(nc, f"$SRV.STATS.{kind}", 0.3):
        if host and r["metadata"].get("host") != host:
            continue
        ep = next((e for e in r["endpoints"] if e["name"] == "stats"), None)
        if ep and ep.get("data"):
            return COUNTERS.decode(json.dumps(ep["data"]))
    return None


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


async def test_services_report_counters_and_gateway_aggregates(fresh_nats, db_dsn, workdir):
    nc = await connect(fresh_nats.settings("admin"), "test-stats", retry_forever=False)
    await provision(nc)
    js = nc.jetstream()
    ingest = start_ingest(fresh_nats, db_dsn, workdir / "stats-ingest.log")
    coll = start_collector(
        fresh_nats,
        HOST,
        workdir / "stats-collector.log",
        FLEETWATCH_COLLECTOR_INTERVAL="0.5",
        FLEETWATCH_COLLECTOR_PROCS_INTERVAL="1",
    )
    alerter = Proc(
        "services.alerter",
        service_env(
            **fresh_nats.env("alerter"),
            FLEETWATCH_ALERTER_BUILTIN_RULES="false",
            FLEETWATCH_ALERTER_RUN_CHECKS="false",
            FLEETWATCH_ALERTER_LOOKBACK_S="0",
        ),
        workdir / "stats-alerter.log",
    )
    cmd = CommanderProcess(
        service_env(**fresh_nats.env(host=HOST)), workdir / "stats-commander", workdir / "stats-commander.log"
    ).start()
    gw = None
    try:
        # Discovery: PING answers per kind, with the agent's host in its metadata.
        async def pinged():
            kinds = {(r["name"], r["metadata"].get("host", "")) for r in await gather(nc, "$SRV.PING", 0.3)}
            return (
                kinds if {("ingest", ""), ("alerter", ""), ("collector", HOST), ("commander", HOST)} <= kinds else None
            )

        try:
            await wait_until(pinged, 45, what="ingest, collector and commander answering $SRV.PING")
        except AssertionError as exc:
            logs = "\n".join(f"--- {p.log.name}\n{p.logs()[-1500:]}" for p in (ingest, coll, alerter))
            raise AssertionError(f"{exc}\n{logs}\n--- commander\n{cmd.log_path.read_text()[-1500:]}") from None
        info = [r for r in await gather(nc, "$SRV.INFO.collector") if r["metadata"].get("host") == HOST]
        assert len(info) == 1 and any(
            e["subject"] == subjects.service_stats("collector", HOST) for e in info[0]["endpoints"]
        )

        # Collector frames reach ingest: ingest's messages_in catches up with what the collector published.
        async def published():
            c = await counters(nc, "collector", HOST)
            return c if c and c.counters.get("frames_published", 0) >= 4 else None

        coll_c = await wait_until(published, 40, what="collector frames_published >= 4")
        assert "frames" in coll_c.queues and coll_c.counters["messages_out"] >= coll_c.counters["frames_published"]
        n = coll_c.counters["frames_published"]

        async def ingested():
            c = await counters(nc, "ingest")
            return c if c and c.counters.get("messages_in", 0) >= n and c.counters.get("rows_written", 0) >= n else None

        before = await wait_until(ingested, 40, what=f"ingest messages_in and rows_written >= {n}")
        # The alerter evaluates the same frames (its subscription starts at its own start).
        alerter_before = await wait_until(
            lambda: _moved(nc, "alerter", "", "messages_in", None), 30, what="alerter messages_in > 0"
        )
        assert alerter_before.counters.get("evaluations", 0) >= 1
        assert before.counters["batches"] >= 1
        assert before.consumer_pending.get("ingest_metrics", -1) >= 0, before

        # One malformed frame: exactly one more dead letter, the service still running.
        await js.publish(subjects.metrics("host-b"), b"{not json", headers={"Nats-Msg-Id": f"bad-{time.time()}"})

        async def dead():
            c = await counters(nc, "ingest")
            moved = c and c.counters.get("dead_letters", 0) > before.counters.get("dead_letters", 0)
            # the batch is counted in once it is done, just after its dead letters
            return c if moved and c.counters["messages_in"] > before.counters["messages_in"] else None

        after = await wait_until(dead, 30, what="ingest dead_letters to move")
        assert after.counters["dead_letters"] == before.counters.get("dead_letters", 0) + 1
        alerter_after = await wait_until(
            lambda: _moved(nc, "alerter", "", "dead_letters", alerter_before), 30, what="alerter dead_letters to move"
        )
        assert alerter_after.counters["dead_letters"] == alerter_before.counters.get("dead_letters", 0) + 1

        # The commander keeps its endpoints and reports the same shape: a malformed request is
        # one more message in and one dead letter.
        await cmd.wait_ready(nc, HOST)
        c0 = await counters(nc, "commander", HOST)
        reply = await nc.request(subjects.ctl(HOST, "apps.list"), b"[broken", timeout=10)
        assert reply.headers and reply.headers.get("Nats-Service-Error-Code") == "400"
        c1 = await wait_until(
            lambda: _moved(nc, "commander", HOST, "dead_letters", c0), 15, what="commander dead_letters to move"
        )
        assert c1.counters["dead_letters"] == c0.counters.get("dead_letters", 0) + 1
        assert c1.counters["messages_in"] == c0.counters.get("messages_in", 0) + 1

        # The gateway's /metrics has every service's lines, gathered over $SRV.STATS.
        gw = await asyncio.to_thread(start_gateway, fresh_nats, db_dsn, workdir / "stats-gw", metrics_cache_s="1.5")
        async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers("viewer"), timeout=30) as http:
            text = (await http.get("/metrics")).text
            assert metric(text, "fleetwatch_service_up", service="ingest") == 1
            assert metric(text, "fleetwatch_service_up", service="collector", host=HOST) == 1
            assert metric(text, "fleetwatch_service_up", service="gateway") == 1
            assert (
                metric(text, "fleetwatch_service_dead_letters_total", service="alerter")
                == alerter_after.counters["dead_letters"]
            )
            assert (
                metric(text, "fleetwatch_service_messages_in_total", service="ingest") >= after.counters["messages_in"]
            )
            assert (
                metric(text, "fleetwatch_service_dead_letters_total", service="ingest")
                == after.counters["dead_letters"]
            )
            assert metric(text, "fleetwatch_service_errors_total", service="collector", host=HOST) is not None
            assert metric(text, "fleetwatch_service_consumer_pending", service="ingest") is not None
            assert (
                metric(text, "fleetwatch_service_queue_size", service="collector", host=HOST, queue="frames")
                is not None
            )
            assert (
                metric(
                    text,
                    "fleetwatch_service_endpoint_requests_total",
                    service="commander",
                    host=HOST,
                    endpoint="apps-list",
                )
                >= 2
            )
            assert (
                metric(
                    text,
                    "fleetwatch_service_endpoint_errors_total",
                    service="commander",
                    host=HOST,
                    endpoint="apps-list",
                )
                >= 1
            )
            assert (
                metric(
                    text,
                    "fleetwatch_service_endpoint_processing_seconds_avg",
                    service="commander",
                    host=HOST,
                    endpoint="apps-list",
                )
                > 0
            )
            assert text.count("# TYPE fleetwatch_service_up gauge") == 1  # one family, one header
            # Scrapes within the cache window cost NATS nothing: the same text comes back.
            assert services_part((await http.get("/metrics")).text) == services_part(text)

            # A service that stops answering reads up 0 at the next gather.
            assert coll.stop() == 0

            async def down():
                t = (await http.get("/metrics")).text
                return t if metric(t, "fleetwatch_service_up", service="collector", host=HOST) == 0 else None

            await wait_until(down, 15, interval=0.5, what="collector up 0")
    finally:
        if gw is not None:
            gw.stop()
        cmd.stop()
        cmd.kill_children()
        coll.stop()
        alerter.stop()
        ingest.stop()
        await nc.close()


def services_part(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("fleetwatch_service_")]


async def _moved(nc, kind: str, host: str, name: str, before: ServiceCounters | None):
    c = await counters(nc, kind, host)
    base = before.counters.get(name, 0) if before else 0
    return c if c and c.counters.get(name, 0) > base else None


async def test_agent_answers_discovery_of_its_own_kinds_only(nats_stack):
    """An agent may answer `$SRV` for the host's agent kinds and its own stats subject, nothing wider."""
    errors: list[str] = []

    async def error_cb(e):
        errors.append(str(e))

    a = nats_stack.agent_settings(HOST)
    agent = await nats.connect(
        servers=[a.url],
        user=a.user,
        password=a.password,
        inbox_prefix=a.inbox_prefix,
        error_cb=error_cb,
        allow_reconnect=False,
    )
    admin = await connect(nats_stack.settings("admin"), "test-srv-admin", retry_forever=False)
    try:
        for subject in (
            "$SRV.PING",
            "$SRV.STATS.collector",
            "$SRV.INFO.commander.abc",
            subjects.service_stats("replicator", HOST),
        ):
            sub = await agent.subscribe(subject)
            await agent.flush()
            assert await delivered(admin, sub, subject, b"x"), subject
            await sub.unsubscribe()
        assert not errors
        for subject in (
            "$SRV.>",
            "$SRV.STATS.ingest",
            "$SRV.PING.gateway.abc",
            subjects.service_stats("collector", "host-b"),
        ):
            errors.clear()
            await agent.subscribe(subject)
            await agent.flush()

            def refused(subject=subject):
                return any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in errors)

            # The server's refusal arrives asynchronously; give a loaded machine time to deliver it.
            for _ in range(50):
                if refused():
                    break
                await asyncio.sleep(0.1)
            assert refused(), (subject, errors)
    finally:
        await agent.close()
        await admin.close()
    # The central gateway identity may ask every service (no agent permission applies to it).
    gw = await connect(nats_stack.settings("gateway"), "test-srv-gw", retry_forever=False)
    try:
        with pytest.raises(nats.errors.NoRespondersError):
            await gw.request("$SRV.PING.nothing-runs-this", b"", timeout=2)
    finally:
        await gw.close()


async def test_replicator_counts_syncs_users_and_dead_letters(pg_cluster, nats_stack, nc, workdir):
    """An agent (host credentials) reports through the narrow grants: syncs and users applied move
    with real syncs, a malformed fleet.users.changed is one dead letter."""
    from tests.support.replicator import ReplicatorProcess, add_user, replicator_env, two_databases

    host = "host-c"
    async with two_databases(pg_cluster) as dbs:
        central = await asyncpg.connect(dbs.central_dsn)
        await add_user(central, "alice", 5001)
        env = replicator_env(
            service_env, nats_stack.env(host=host), dbs.central_dsn, dbs.local_dsn, interval=3600, debounce=0.1
        )
        proc = ReplicatorProcess(env, workdir / f"stats-replicator-{time.monotonic_ns()}.log").start()
        try:
            first = await wait_until(
                lambda: _moved(nc, "replicator", host, "syncs", None), 45, what="replicator's first sync counted"
            )
            assert (
                first.counters.get("users_applied") == 1
                and first.gauges.get("users") == 1
                and not first.counters.get("sync_failures")
            )

            await nc.publish(subjects.USERS_CHANGED, b"{oops")
            bad = await wait_until(
                lambda: _moved(nc, "replicator", host, "dead_letters", first),
                15,
                what="replicator dead_letters to move",
            )
            assert bad.counters["dead_letters"] == 1 and bad.counters["syncs"] == first.counters["syncs"]

            await add_user(central, "bob", 5002)
            await nc.publish(subjects.USERS_CHANGED, b'{"ts": 1.0, "op": "created", "username": "bob"}')
            synced = await wait_until(
                lambda: _moved(nc, "replicator", host, "users_applied", bad), 15, what="bob applied"
            )
            assert synced.counters["users_applied"] == 2 and synced.counters["syncs"] >= first.counters["syncs"] + 1
            assert synced.gauges["users"] == 2 and synced.counters["messages_in"] >= 2
        finally:
            proc.stop()
            await central.close()


async def test_authcallout_counts_grants_and_refusals_and_grants_narrow_discovery(workdir):
    """Registered agents get the same narrow `$SRV` grants from the auth callout's JWT, and the
    callout's STATS count each admission and refusal once."""
    import uuid

    from libs.runtime import NatsSettings
    from libs.schemas.registration import AGENT_RECORD, AgentRecord, hash_secret
    from libs.schemas.streams import AGENTS_BUCKET
    from tests.support.registration import CalloutStack, try_connect

    st = CalloutStack(workdir / f"stats-callout-{uuid.uuid4().hex[:8]}")
    st.server.start()
    admin = None
    try:
        admin = await connect(
            NatsSettings(url=st.url, user="admin", password=st.creds["admin"]),
            "stats-callout-admin",
            retry_forever=False,
        )
        await provision(admin)
        kv = await admin.jetstream().key_value(AGENTS_BUCKET.bucket)
        secret = "s" * 43
        await kv.put(
            "reg-1",
            AGENT_RECORD.encode(AgentRecord(host="reg-1", secret_sha256=hash_secret(secret), created_at=time.time())),
        )
        st.start_callout()
        await wait_until(lambda: counters(admin, "authcallout"), 30, what="authcallout answering $SRV.STATS")

        creds = {"user": "agent-reg-1", "inbox_prefix": subjects.inbox_prefix("reg-1")}
        settings = NatsSettings(
            url=st.url,
            user=creds["user"],
            password=secret,
            inbox_prefix=creds["inbox_prefix"],
            reconnect_wait=0.2,
            connect_timeout=3,
        )
        agent, errs = await try_connect(settings)
        assert agent is not None, errs
        violations: list[str] = []
        agent._error_cb = lambda e: violations.append(str(e)) or asyncio.sleep(0)  # noqa: SLF001 - record permission errors
        own = await agent.subscribe("$SRV.PING.collector")
        await agent.subscribe("$SRV.PING.ingest")
        await agent.flush()
        assert await delivered(admin, own, "$SRV.PING.collector", b"p")
        await wait_until(
            lambda: _async(any("$srv.ping.ingest" in v.lower() for v in violations)),
            5,
            interval=0.1,
            what="a violation for $SRV.PING.ingest",
        )
        await agent.close()

        bad, _ = await try_connect(
            NatsSettings(
                url=st.url,
                user="agent-reg-1",
                password="x" + secret,
                inbox_prefix=creds["inbox_prefix"],
                connect_timeout=3,
            )
        )
        assert bad is None

        async def counted():
            c = await counters(admin, "authcallout")
            return c if c and c.counters.get("granted") == 1 and c.counters.get("denied", 0) >= 1 else None

        c = await wait_until(counted, 15, what="authcallout granted 1, denied 1")
        # The refused client tries more than once within its connect: each try is one refusal.
        assert c.counters["messages_in"] == c.counters["granted"] + c.counters["denied"]
    finally:
        if admin is not None:
            await admin.close()
        st.stop()


async def _async(value):
    return value


def test_exposition_of_replies_labels_up_and_forgetting():
    """The rendering alone: label escaping, one family header, a silent instance is down, then
    forgotten; a failing counter callback leaves only that value out of the report."""
    from libs.runtime import ServiceStats
    from services.gateway.servicestats import FORGET_S, ServiceScraper

    stats = ServiceStats()
    stats.inc("messages_in", 3)
    stats.counter("errors", lambda: 1 // 0)
    stats.queue("frames", lambda: 2)
    stats.pending(lambda: {"ingest_metrics": 5})
    data = stats.snapshot("ingest", 'odd"name:1')
    assert (
        data.counters == {"messages_in": 3}
        and data.queues == {"frames": 2}
        and data.consumer_pending == {"ingest_metrics": 5}
    )

    now = [1000.0]
    scraper = ServiceScraper(None, clock=lambda: now[0])  # render() never touches NATS
    reply = {
        "name": "ingest",
        "id": "X1",
        "metadata": {"instance": data.instance},
        "endpoints": [
            {
                "name": "stats",
                "num_requests": 9,
                "num_errors": 0,
                "processing_time": 0,
                "average_processing_time": 0,
                "data": json.loads(COUNTERS.encode(data)),
            },
            {
                "name": "work",
                "num_requests": 4,
                "num_errors": 1,
                "processing_time": 2_000_000_000,
                "average_processing_time": 500_000_000,
            },
        ],
    }
    text = scraper.render([reply, reply])  # the same instance twice (two requests) counts once
    inst = 'odd"name:1'
    assert (
        metric(text, "fleetwatch_service_messages_in_total", service="ingest", instance=inst.replace('"', '\\"')) == 3
    )
    assert metric(text, "fleetwatch_service_queue_size", queue="frames") == 2
    assert metric(text, "fleetwatch_service_consumer_pending", consumer="ingest_metrics") == 5
    assert metric(text, "fleetwatch_service_endpoint_requests_total", endpoint="work") == 4
    assert metric(text, "fleetwatch_service_endpoint_processing_seconds_total", endpoint="work") == 2.0
    assert metric(text, "fleetwatch_service_endpoint_processing_seconds_avg", endpoint="work") == 0.5
    assert metric(text, "fleetwatch_service_endpoint_requests_total", endpoint="stats") is None
    assert metric(text, "fleetwatch_service_errors_total") is None
    assert (
        text.count("fleetwatch_service_messages_in_total{") == 1
        and text.count("# TYPE fleetwatch_service_up gauge") == 1
    )
    assert metric(text, "fleetwatch_service_up", service="ingest") == 1

    now[0] += 10
    assert metric(scraper.render([]), "fleetwatch_service_up", service="ingest") == 0
    now[0] += FORGET_S + 1
    assert scraper.render([]) == ""
