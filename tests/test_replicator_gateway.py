"""Replication end to end: users made through the gateway's API reach a host's local copy by
fleet.users.changed; the gateway runs a sync on request and shows the last status per host
(stored by ingest). Real gateway, ingest, replicator, NATS and PostgreSQL."""

from __future__ import annotations

import time

import asyncpg
import pytest
from passlib.hash import sha512_crypt

from libs.runtime import connect
from libs.runtime.jetstream import provision
from tests.conftest import service_env
from tests.support.gateway import running_gateway
from tests.support.pipeline import start_ingest, wait_until
from tests.support.replicator import ReplicatorProcess, local_users, replicator_env, two_databases, wait_local

pytestmark = pytest.mark.timeout(240)
HOST = "host-a"


@pytest.fixture
async def dbs(pg_cluster):
    async with two_databases(pg_cluster) as d:
        yield d


async def test_gateway_users_reach_the_host_and_sync_on_request(dbs, fresh_nats, workdir):
    admin = await connect(fresh_nats.settings("admin"), "test-admin", retry_forever=False)
    await provision(admin)
    await admin.close()
    ingest = start_ingest(fresh_nats, dbs.central_dsn, workdir / f"ingest-repl-{time.monotonic_ns()}.log")
    env = replicator_env(service_env, fresh_nats.env(host=HOST), dbs.central_dsn, dbs.local_dsn, interval=3600)
    repl = ReplicatorProcess(env, workdir / f"replicator-gw-{time.monotonic_ns()}.log").start()
    try:
        with running_gateway(fresh_nats, dbs.central_dsn, workdir / "gw-repl") as gw:
            async with (
                gw.async_client("admin") as adm,
                gw.async_client("operator") as op,
                gw.async_client("viewer") as viewer,
            ):
                # A user made through the API is a host account within moments (event-driven).
                r = await adm.post(
                    "/api/v1/users", json={"username": "zoe", "password": "zoe's long password", "role": "viewer"}
                )
                assert r.status_code == 201, r.text
                t0 = time.monotonic()
                local = await wait_local(dbs.local_dsn, lambda u: "zoe" in u, 10)
                print(f"API -> host account in {time.monotonic() - t0:.2f}s")
                # The hash pam_unix will check is the one the gateway stored.
                assert sha512_crypt.verify("zoe's long password", local["zoe"][5])

                r = await op.post(f"/api/v1/hosts/{HOST}/replication/sync")
                assert r.status_code == 200, r.text
                st = r.json()
                assert st["ok"] and st["trigger"] == "manual" and st["host"] == HOST
                assert st["total"] == len(await local_users(dbs.local_dsn))
                assert "$6$" not in r.text and "password" not in r.text

                # Nobody answers for host-b: a clear 503, not a hang.
                r = await op.post("/api/v1/hosts/host-b/replication/sync", params={"timeout": 5})
                assert r.status_code == 503 and "no replicator" in r.json()["detail"]
                r = await op.post("/api/v1/hosts/bad.host/replication/sync")
                assert r.status_code == 400

                # The last status per host, as ingest stored it.
                async def last_manual():
                    r = await viewer.get(f"/api/v1/hosts/{HOST}/replication")
                    assert r.status_code == 200, r.text
                    last = r.json()["last"]
                    return last if last and last["trigger"] == "manual" else None

                last = await wait_until(last_manual, 20, what="the manual sync's status in the gateway")
                assert last["ok"] and last["total"] == st["total"]
                r = await viewer.get("/api/v1/replication")
                assert [i["host"] for i in r.json()["items"]] == [HOST]
                r = await viewer.get("/api/v1/hosts/host-c/replication")
                assert r.json() == {"host": "host-c", "last": None}

                # The requested sync is audited under the operator's name.
                async def audited():
                    conn = await asyncpg.connect(dbs.central_dsn)
                    try:
                        return await conn.fetchval(
                            "SELECT actor FROM audit_log WHERE action = 'replication.sync' AND host = $1", HOST
                        )
                    finally:
                        await conn.close()

                assert await wait_until(audited, 20, what="audit record") == gw.actor("operator")

                # Deactivated through the API: gone from the host.
                r = await adm.patch("/api/v1/users/zoe", json={"is_active": False})
                assert r.status_code == 200, r.text
                await wait_local(dbs.local_dsn, lambda u: "zoe" not in u, 10)
    finally:
        assert repl.stop() == 0
        ingest.stop()
    assert "zoe's long password" not in repl.log_text()


async def test_last_status_per_host_query_picks_each_hosts_newest(db_dsn):
    from services.gateway.controllers.replication import _LAST_ALL, _LAST_ONE
    from tests.support.gateway import apply_ingest_schema

    await apply_ingest_schema(db_dsn)
    conn = await asyncpg.connect(db_dsn)
    try:
        rows = [(f"h{h}", t, t % 3 != 0, t) for h in range(5) for t in range(1, 40)]
        await conn.executemany(
            "INSERT INTO replica_status (time, host, ok, total) VALUES (to_timestamp($2), $1, $3, $4)", rows
        )
        got = [(r["host"], r["ts"], r["total"]) for r in await conn.fetch(_LAST_ALL)]
        assert got == [(f"h{h}", 39.0, 39) for h in range(5)]
        one = await conn.fetchrow(_LAST_ONE, "h3")
        assert (one["host"], one["ts"], one["ok"]) == ("h3", 39.0, False)
    finally:
        await conn.close()
