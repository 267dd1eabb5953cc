"""A compromised host agent against the NATS plane (docs/security.md, "Compromised host agent"):
real nats-server with the generated per-host credentials, the real collector and gateway. `evil`
is host-b's agent, `victim` host-a's; whatever evil does must not change what is stored or shown
for host-a, nor fill storage, nor speak for another service."""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import SimpleNamespace

import nats.errors
import pytest
from nats.js.errors import APIError

from fleetwatch.simulate import Simulator
from libs.runtime import ServiceStats, StatsService, connect, deadletter
from libs.schemas import AppStatus, Codec, HostInfo, MetricFrame, streams, subjects
from libs.schemas.streams import BUCKETS, H_TRUNCATED, STREAMS, MiB
from services.gateway.hub import Hub
from tests.support.gateway import start_gateway
from tests.support.pipeline import start_collector, wait_until

VICTIM, EVIL = "host-a", "host-b"
FRAME, INFO, APP = Codec(MetricFrame), Codec(HostInfo), Codec(AppStatus)
# A publish the server's permissions drop: no ack ever comes.
REFUSED = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def agent(stack, host: str):
    return await connect(stack.agent_settings(host), f"trust-{host}", retry_forever=False)


async def stream_frames(admin, host: str) -> list[MetricFrame]:
    """Every frame of `host` in METRICS, in stream order."""
    sub = await admin.jetstream().pull_subscribe(subjects.metrics(host), stream="METRICS")  # ephemeral
    out: list[MetricFrame] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except Exception:
                break
            out += [FRAME.decode(m.data) for m in msgs]
    finally:
        await sub.unsubscribe()
    return out


# -- item 1: another host's message ids --------------------------------------------------------


@pytest.mark.slow
async def test_evil_replaying_victims_msg_ids_suppresses_none_of_its_frames(fresh_nats, admin, workdir):
    """Evil publishes valid frames on its own subject under the ids victim's next frames had
    (`victim:<boot>:<seq>`, readable on /api/v1/hosts/victim): every frame of victim is stored."""
    coll = start_collector(fresh_nats, VICTIM, workdir / "trust-collector.log", FLEETWATCH_COLLECTOR_INTERVAL="1")
    evil = await agent(fresh_nats, EVIL)
    try:

        async def latest() -> MetricFrame | None:
            try:
                return FRAME.decode((await admin.jetstream().get_last_msg("METRICS", subjects.metrics(VICTIM))).data)
            except Exception:
                return None

        first = await wait_until(latest, 30, what="victim's first frame")
        sim = Simulator([EVIL], seed=1)
        ejs = evil.jetstream()
        for n in range(first.seq + 1, first.seq + 14):
            for mid in (f"{VICTIM}:{first.boot}:{n}", f"{VICTIM}:{first.boot}:p{n}"):
                await ejs.publish(subjects.metrics(EVIL), FRAME.encode(sim.frame(EVIL)), headers={"Nats-Msg-Id": mid})

        async def past() -> bool:
            f = await latest()
            return f is not None and f.seq >= first.seq + 15

        await wait_until(past, 40, what="victim's frames past the replayed ids")
    finally:
        coll.stop()
        await evil.close()
    seqs = [f.seq for f in await stream_frames(admin, VICTIM)]
    assert seqs == list(range(1, len(seqs) + 1)), (
        f"victim's frames lost: {sorted(set(range(1, max(seqs) + 1)) - set(seqs))}"
    )


# -- item 2: the gateway's live view takes the host from the subject ---------------------------


def _frame(host: str, seq: int, ts: float | None = None, cpu: float = 10.0) -> bytes:
    f = Simulator([host], seed=seq).frame(host)
    d = json.loads(FRAME.encode(f))
    d.update(seq=seq, boot=1, ts=time.time() if ts is None else ts)
    d["cpu"]["percent"] = cpu
    return json.dumps(d).encode()


def _info(host: str, hostname: str, ts: float | None = None) -> bytes:
    return INFO.encode(HostInfo(host=host, ts=time.time() if ts is None else ts, hostname=hostname))


async def test_spoofed_bodies_and_far_timestamps_leave_victims_live_entry_alone(fresh_nats, admin, db_dsn, workdir):
    gw = await asyncio.to_thread(start_gateway, fresh_nats, db_dsn, workdir / "trust-gw-live")
    victim, evil = await agent(fresh_nats, VICTIM), await agent(fresh_nats, EVIL)
    try:
        async with gw.async_client("viewer") as http:

            async def shown(host: str, seq: int, hostname: str = ""):
                r = await http.get(f"/api/v1/hosts/{host}")
                if r.status_code != 200:
                    return None
                body = r.json()
                ok = (body["frame"] or {}).get("seq") == seq and (not hostname or body["host"]["hostname"] == hostname)
                return body if ok else None

            await victim.publish(subjects.hosts(VICTIM), _info(VICTIM, "victim-host"))
            for seq in (1, 2, 3):
                await victim.publish(subjects.metrics(VICTIM), _frame(VICTIM, seq))
            await wait_until(lambda: shown(VICTIM, 3, "victim-host"), 30, what="victim's entry")

            # Evil's bodies name the victim, on evil's own subjects (the only ones it may use).
            await evil.publish(subjects.metrics(EVIL), _frame(VICTIM, 999, cpu=99.5))
            await evil.publish(subjects.metrics(EVIL), _frame(VICTIM, 1000, ts=1e308, cpu=99.5))
            await evil.publish(subjects.hosts(EVIL), _info(VICTIM, "pwned", ts=time.time() + 60))
            await evil.publish(
                subjects.apps(EVIL), APP.encode(AppStatus(host=VICTIM, ts=time.time(), app="x", state="running"))
            )
            # The victim's own far-off stamp pins nothing either.
            await victim.publish(subjects.metrics(VICTIM), _frame(VICTIM, 4, ts=1e308))
            # Sentinels on the same subscriptions: once shown, everything before was handled.
            await evil.publish(subjects.hosts(EVIL), _info(EVIL, "evil-own"))
            await victim.publish(subjects.metrics(VICTIM), _frame(VICTIM, 5))
            await wait_until(lambda: _hostname(http, EVIL, "evil-own"), 30, what="evil's own info")
            body = await wait_until(lambda: shown(VICTIM, 5, "victim-host"), 30, what="victim's seq 5 shown")
            assert body["host"]["last"]["cpu_percent"] != 99.5
            assert body["host"]["hostname"] == "victim-host"

            async def refused():
                t = (await http.get("/metrics")).text
                return (_metric(t, "fleetwatch_service_refused_messages_total", service="gateway") or 0) >= 5

            await wait_until(refused, 30, what="the gateway counting what it refused")
    finally:
        gw.stop()
        await victim.close()
        await evil.close()


async def _hostname(http, host: str, hostname: str) -> bool:
    r = await http.get(f"/api/v1/hosts/{host}")
    return r.status_code == 200 and r.json()["host"]["hostname"] == hostname


async def test_hub_refuses_other_hosts_bodies_and_far_timestamps_on_every_host_subject():
    """The hub on its own: the live stream of host-a sees none of evil's spoofed events."""
    from services.gateway.hub import HANDLERS

    hub = Hub(max_clients=5, queue_size=100, buffer_size=100, heartbeat_s=15)
    client = hub.add([VICTIM], ["frame", "host", "app", "procs", "replica"])
    handlers = {sub: hub._handler(codec, convert, bound) for sub, codec, convert, bound in HANDLERS}
    sim = Simulator([VICTIM], seed=2)
    spoofed = {
        subjects.METRICS_ALL: FRAME.encode(sim.frame(VICTIM)),
        subjects.PROCS_ALL: Codec(type(sim.snapshot(VICTIM))).encode(sim.snapshot(VICTIM)),
        subjects.HOSTS_ALL: _info(VICTIM, "pwned"),
        subjects.APPS_ALL: APP.encode(AppStatus(host=VICTIM, ts=time.time(), app="x", state="running")),
        subjects.REPLICA_ALL: b'{"v": 1, "host": "%s", "ts": %f, "ok": true}' % (VICTIM.encode(), time.time()),
    }
    for wildcard, data in spoofed.items():
        await handlers[wildcard](SimpleNamespace(subject=wildcard.replace("*", EVIL), data=data))
    await handlers[subjects.METRICS_ALL](
        SimpleNamespace(subject=subjects.metrics(VICTIM), data=_frame(VICTIM, 7, 1e308))
    )
    assert hub.refused == len(spoofed) + 1 and hub.published == 0 and not client.pending
    await handlers[subjects.METRICS_ALL](SimpleNamespace(subject=subjects.metrics(VICTIM), data=_frame(VICTIM, 8)))
    assert hub.published == 1


# -- item 8: storage limits, per-host dead letters, rollups, $SRV.STATS -------------------------


async def test_every_stream_and_bucket_is_limited_and_an_agent_cannot_fill_or_wipe_them(fresh_nats, admin):
    js = admin.jetstream()
    names = {s.name for s in STREAMS} | {f"KV_{b.bucket}" for b in BUCKETS}
    seen = set()
    for info in await js.streams_info():
        c = info.config
        seen.add(c.name)
        assert (c.max_bytes or -1) > 0 and (c.max_msg_size or -1) > 0, (c.name, c.max_bytes, c.max_msg_size)
        assert not c.allow_rollup_hdrs or c.name.startswith("KV_"), c.name
    assert names <= seen
    hosts_kv = (await js.stream_info("KV_fleet_hosts")).config
    assert not hosts_kv.allow_rollup_hdrs and hosts_kv.deny_purge
    adl = (await js.stream_info("AGENT_DEADLETTER")).config
    assert adl.max_msgs_per_subject == streams.AGENT_DEADLETTER.max_msgs_per_subject

    victim, evil = await agent(fresh_nats, VICTIM), await agent(fresh_nats, EVIL)
    try:
        ejs = evil.jetstream()
        # Oversize: refused by the stream, not stored.
        with pytest.raises(APIError):
            await ejs.publish(subjects.metrics(EVIL), b"x" * (streams.METRICS.max_msg_size + 1), timeout=5)
        # Dead letters: only on evil's own subjects, small ones only.
        dl_before = (await js.stream_info("DEADLETTER")).state.messages
        for subject in (subjects.deadletter("ingest"), subjects.deadletter("collector", VICTIM)):
            with pytest.raises(REFUSED):  # a permissions violation: no ack ever comes
                await ejs.publish(subject, b"x" * 1024, timeout=1)
        assert (await js.stream_info("DEADLETTER")).state.messages == dl_before
        await ejs.publish(subjects.deadletter("collector", EVIL), b"small", timeout=5)
        with pytest.raises(APIError):
            await ejs.publish(subjects.deadletter("collector", EVIL), b"x" * (1 * MiB + 1), timeout=5)
        # ...and the runtime's own quarantine keeps an oversize one as its first bytes, saying so.
        await deadletter.send(evil, "commander", subjects.ctl(EVIL, "apps.list"), b"y" * (3 * MiB), "too big")
        kept = await js.get_last_msg("AGENT_DEADLETTER", subjects.deadletter("commander", EVIL))
        assert kept.headers[H_TRUNCATED] == str(3 * MiB) and 0 < len(kept.data) < MiB
        # Many dead letters from one host: a bounded count is kept per subject.
        for i in range(streams.AGENT_DEADLETTER.max_msgs_per_subject + 10):
            await ejs.publish(subjects.deadletter("collector", EVIL), b"%d" % i, timeout=5)
        info = await js.stream_info("AGENT_DEADLETTER", subjects_filter=subjects.deadletter("collector", EVIL))
        assert info.state.subjects[subjects.deadletter("collector", EVIL)] == adl.max_msgs_per_subject

        # KV fleet_hosts: its own key only, and no rollup that would wipe the others' keys.
        kv = await js.key_value("fleet_hosts")
        await victim.jetstream().publish(f"$KV.fleet_hosts.{VICTIM}", _info(VICTIM, "victim-host"), timeout=5)
        for rollup in ("all", "sub"):
            with pytest.raises(APIError):
                await ejs.publish(f"$KV.fleet_hosts.{EVIL}", b"{}", headers={"Nats-Rollup": rollup}, timeout=5)
        with pytest.raises(REFUSED):
            await ejs.publish(f"$KV.fleet_hosts.{VICTIM}", b"{}", timeout=1)
        assert INFO.decode((await kv.get(VICTIM)).value).hostname == "victim-host"
    finally:
        await victim.close()
        await evil.close()


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name:
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
            if all(have.get(k) == v for k, v in labels.items()):
                return float(m.group(3))
    return None


async def test_forged_stats_replies_change_no_other_services_rows(fresh_nats, admin, db_dsn, workdir):
    """Evil answers every `$SRV.STATS` it can hear, and its own stats subject, as `ingest` and as
    victim's collector: /metrics still shows ingest's and victim's own numbers only."""
    central = await connect(fresh_nats.settings("ingest"), "trust-ingest", retry_forever=False)
    victim, evil = await agent(fresh_nats, VICTIM), await agent(fresh_nats, EVIL)
    mine = ServiceStats()
    mine.counter("messages_in", lambda: 5)
    theirs = ServiceStats()
    theirs.counter("errors", lambda: 7)
    services = [StatsService(central, "ingest", mine), StatsService(victim, "collector", theirs, host=VICTIM)]
    for svc in services:
        await svc.start()

    def forged(name: str, host: str) -> bytes:
        data = {"kind": name, "instance": "forged", "host": host, "counters": {"messages_in": 999, "errors": 999}}
        return json.dumps(
            {
                "type": "io.nats.micro.v1.stats_response",
                "name": name,
                "id": "forged",
                "version": "0.1.0",
                "started": "2024-01-01T00:00:00.000Z",
                "metadata": {"instance": "forged", "host": host},
                "endpoints": [{"name": "stats", "subject": "x", "num_requests": 1, "data": data}],
            }
        ).encode()

    async def answer(msg) -> None:
        if msg.reply:
            for name, host in (("ingest", ""), ("collector", VICTIM), ("commander", VICTIM)):
                await evil.publish(msg.reply, forged(name, host))

    for subject in (
        "$SRV.STATS",
        "$SRV.STATS.collector",
        "$SRV.STATS.commander",
        subjects.service_stats("collector", EVIL),
    ):
        await evil.subscribe(subject, cb=answer)
    await evil.flush()
    gw = await asyncio.to_thread(start_gateway, fresh_nats, db_dsn, workdir / "trust-gw-stats", metrics_cache_s="0.5")
    try:
        async with gw.async_client("viewer") as http:

            async def scraped():
                for nc, host in ((victim, VICTIM), (evil, EVIL)):  # both hosts known to the gateway
                    await nc.publish(subjects.metrics(host), _frame(host, 1))
                t = (await http.get("/metrics")).text
                return t if _metric(t, "fleetwatch_service_up", service="collector", host=VICTIM) == 1 else None

            text = await wait_until(scraped, 30, what="victim's collector on /metrics")
    finally:
        gw.stop()
        for svc in services:
            await svc.stop()
        for nc in (central, victim, evil):
            await nc.close()
    assert 'instance="forged",host=""' not in text and 'service="ingest",instance="forged"' not in text
    assert _metric(text, "fleetwatch_service_messages_in_total", service="ingest") == 5
    rows = [line for line in text.splitlines() if 'service="collector"' in line and f'host="{VICTIM}"' in line]
    assert rows and not any("forged" in line or line.endswith(" 999") for line in rows), rows
    assert _metric(text, "fleetwatch_service_errors_total", service="collector", host=VICTIM) == 7
    assert not [line for line in text.splitlines() if 'service="commander"' in line and f'host="{VICTIM}"' in line]
    # What evil said on its own subject is evil's own row, whatever name it claimed.
    assert _metric(text, "fleetwatch_service_up", service="collector", host=EVIL) == 1
