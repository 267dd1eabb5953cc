"""The replicator as it runs on a host (`python -m services.replicator`, agent credentials):
start, schedule, fleet.users.changed within a second, manual request, central outage."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from urllib.parse import urlsplit

import asyncpg
import pytest

from libs.schemas import AuditRecord, Codec, ReplicationStatus, UserChange, encode, subjects
from tests.conftest import service_env
from tests.support.replicator import (
    ReplicatorProcess,
    StatusWatch,
    TcpProxy,
    add_user,
    local_users,
    real_hash,
    replicator_env,
    two_databases,
    wait_local,
    with_port,
)

HOST = "host-a"
STATUS = Codec(ReplicationStatus)


def changed(op: str, username: str = "") -> bytes:
    return encode(UserChange(ts=time.time(), op=op, username=username))


@pytest.fixture
async def dbs_bare(pg_cluster):
    """Central with the users table; local still empty (the service migrates it)."""
    async with two_databases(pg_cluster, local_schema=False) as d:
        yield d


@pytest.fixture
async def dbs(pg_cluster):
    async with two_databases(pg_cluster) as d:
        yield d


async def test_event_manual_and_no_secrets(dbs_bare, nats_stack, nc, workdir):
    dbs = dbs_bare
    c = await asyncpg.connect(dbs.central_dsn)
    hashes = [real_hash("correct horse 1"), real_hash("correct horse 2"), real_hash("correct horse 3")]
    await add_user(c, "alice", 5001, password_hash=hashes[0])
    watch = await StatusWatch().subscribe(nc, HOST)
    dead: list = []

    async def on_dead(msg) -> None:
        dead.append(msg)

    dl_sub = await nc.subscribe(subjects.deadletter("replicator", HOST), cb=on_dead)
    audits: list = []

    async def on_audit(msg) -> None:
        audits.append(Codec(AuditRecord).decode(msg.data))

    audit_sub = await nc.subscribe(subjects.audit(HOST), cb=on_audit)
    env = replicator_env(
        service_env, nats_stack.env(host=HOST), dbs.central_dsn, dbs.local_dsn, interval=3600, debounce=0.1
    )
    proc = ReplicatorProcess(env, workdir / f"replicator-{time.monotonic_ns()}.log").start()
    try:
        _, first = await watch.wait_for(lambda s: s.ok, 60)
        assert first.trigger == "start" and first.added == 1 and first.host == HOST
        assert set(await local_users(dbs.local_dsn)) == {"alice"}

        # Event-driven: a central change plus fleet.users.changed is on the host within 1 s.
        latencies = []
        for i, name in enumerate(("bob", "carol")):
            await add_user(c, name, 5002 + i, password_hash=hashes[1 + i])
            n = len(watch.items)
            t0 = time.monotonic()
            await nc.publish(subjects.USERS_CHANGED, changed("created", name))
            await wait_local(dbs.local_dsn, lambda u, name=name: name in u, 10)
            latencies.append(time.monotonic() - t0)
            _, st = await watch.wait_for(lambda s: s.added == 1, 5, after=n)
            assert st.trigger == "event" and st.ok
        print(f"event -> local table latencies: {[round(x, 3) for x in latencies]} s")
        assert min(latencies) < 1.0, latencies

        # A burst of events is one or two syncs, not fifty.
        n = len(watch.items)
        await c.execute("UPDATE users SET shell='/bin/sh' WHERE username='bob'")
        for _ in range(50):
            await nc.publish(subjects.USERS_CHANGED, changed("updated", "bob"))
        await nc.flush()
        await watch.wait_for(lambda s: s.updated == 1, 5, after=n)
        await asyncio.sleep(1.0)
        assert 1 <= len(watch.items) - n <= 3  # stragglers on a loaded box may add one more

        # Deactivation with an event: gone from the host.
        await c.execute("UPDATE users SET is_active=false WHERE username='carol'")
        await nc.publish(subjects.USERS_CHANGED, changed("deactivated", "carol"))
        await wait_local(dbs.local_dsn, lambda u: "carol" not in u, 5)

        # Manual trigger: the reply is the status of a sync that started after the request.
        await add_user(c, "dave", 5010)
        reply = await nc.request(subjects.sync(HOST), b"", timeout=10)
        st = STATUS.decode(reply.data)
        assert st.ok and st.trigger == "manual" and st.added == 1 and st.total == 3
        assert "dave" in await local_users(dbs.local_dsn)

        # Asked by someone: the sync is audited under their name.
        reply = await nc.request(subjects.sync(HOST), b'{"actor": "ops-jane"}', timeout=10)
        assert STATUS.decode(reply.data).ok
        for _ in range(100):
            if any(a.actor == "ops-jane" for a in audits):
                break
            await asyncio.sleep(0.05)
        rec = next(a for a in audits if a.actor == "ops-jane")
        assert rec.action == "replication.sync" and rec.result == "ok" and rec.host == HOST and rec.params["total"] == 3

        # A malformed event or request is quarantined, not fatal; the request gets a reason.
        await nc.publish(subjects.USERS_CHANGED, b'{"op": 42')
        reply = await nc.request(subjects.sync(HOST), b'{"actor": 7}', timeout=10)
        bad = STATUS.decode(reply.data)
        assert not bad.ok and "malformed sync request" in bad.error
        for _ in range(100):
            if len(dead) >= 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(d.headers.get("Fleet-Subject") for d in dead) == sorted(
            [subjects.USERS_CHANGED, subjects.sync(HOST)]
        )
        reply = await nc.request(subjects.sync(HOST), b"", timeout=10)
        assert STATUS.decode(reply.data).ok
    finally:
        await dl_sub.unsubscribe()
        await audit_sub.unsubscribe()
        rc = proc.stop()
        await c.close()
    assert rc == 0
    logs = proc.log_text()
    assert '"sync done"' in logs
    password = urlsplit(dbs.central_dsn).password
    for text in [logs, *(r.decode() for r in watch.raw)]:
        for h in hashes:
            assert h not in text and h.split("$")[-1] not in text
        assert password not in text


async def test_scheduled_sync_without_any_event(dbs, nats_stack, nc, workdir):
    c = await asyncpg.connect(dbs.central_dsn)
    watch = await StatusWatch().subscribe(nc, HOST)
    env = replicator_env(service_env, nats_stack.env(host=HOST), dbs.central_dsn, dbs.local_dsn, interval=1.0)
    proc = ReplicatorProcess(env, workdir / f"replicator-{time.monotonic_ns()}.log").start()
    try:
        await watch.wait_for(lambda s: s.ok, 60)
        await add_user(c, "erin", 6001)
        await wait_local(dbs.local_dsn, lambda u: "erin" in u, 10)
        await c.execute("DELETE FROM users WHERE username='erin'")
        n = len(watch.items)
        await wait_local(dbs.local_dsn, lambda u: "erin" not in u, 10)
        _, st = await watch.wait_for(lambda s: s.removed == 1, 5, after=n)
        assert st.trigger == "schedule"
    finally:
        assert proc.stop() == 0
        await c.close()


async def test_central_outage_keeps_local_copy_and_retries_with_backoff(dbs, nats_stack, nc, workdir, pg_cluster):
    c = await asyncpg.connect(dbs.central_dsn)
    await add_user(c, "frank", 7001)
    await add_user(c, "grace", 7002)
    proxy = TcpProxy("127.0.0.1", pg_cluster.port)
    await proxy.open()
    watch = await StatusWatch().subscribe(nc, HOST)
    env = replicator_env(
        service_env,
        nats_stack.env(host=HOST),
        with_port(dbs.central_dsn, proxy.port),
        dbs.local_dsn,
        interval=3600,
        retry_min=0.25,
        retry_max=1.0,
        central_timeout=2,
    )
    proc = ReplicatorProcess(env, workdir / f"replicator-{time.monotonic_ns()}.log").start()
    try:
        await watch.wait_for(lambda s: s.ok and s.total == 2, 60)
        before = await local_users(dbs.local_dsn)

        await proxy.close()
        await c.execute("UPDATE users SET is_active=false WHERE username='grace'")
        await add_user(c, "heidi", 7003)
        n = len(watch.items)
        reply = await nc.request(subjects.sync(HOST), b"", timeout=15)
        st = STATUS.decode(reply.data)
        assert not st.ok and st.error and st.trigger == "manual"
        assert await local_users(dbs.local_dsn) == before  # nothing lost while the centre is away

        # Retries follow by themselves, spaced out (0.25, 0.5, 1, 1 ... s), not in a hot loop.
        await asyncio.sleep(3.0)
        fails = [(t, s) for t, s in watch.items[n:] if not s.ok]
        retries = [t for t, s in fails if s.trigger == "retry"]
        assert 3 <= len(retries) <= 8, [s for _, s in fails]
        gaps = [b - a for a, b in pairwise(retries)]
        assert gaps[-1] > 0.6 and gaps[-1] > gaps[0]
        assert await local_users(dbs.local_dsn) == before

        await proxy.open()  # same port: the service's DSN works again
        _, st = await watch.wait_for(lambda s: s.ok, 10, after=len(watch.items))
        assert st.trigger == "retry" and (st.added, st.removed) == (1, 1)
        assert set(await local_users(dbs.local_dsn)) == {"frank", "heidi"}
    finally:
        assert proc.stop() == 0
        await proxy.close()
        await c.close()
    logs = proc.log_text()
    assert '"sync failed; local copy unchanged"' in logs
    assert urlsplit(dbs.central_dsn).password not in logs
