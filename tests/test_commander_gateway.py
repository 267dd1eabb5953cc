"""The commander through the gateway: real gateway, real commander (agent-host-b), real ingest
writing the audit_log table. An operator's restart is audited under that user's name; a viewer
is refused; logs come as a tail and as SSE; the signed webhook checks signature, time and replay."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import httpx
import pytest

from tests.conftest import service_env
from tests.support.commander import APP_PYTHON, CommanderProcess, signed_webhook
from tests.support.gateway import create_database, drop_database, running_gateway
from tests.support.pipeline import start_ingest

HOST = "host-b"
SECRET = "gw-commander-webhook-secret"
APP = """
import time
for i in range(10):
    print(f"gw line {i}", flush=True)
while True:
    time.sleep(0.2)
"""

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
async def stack(nats_stack, pg_cluster, workdir):
    from libs.runtime import connect
    from libs.runtime.jetstream import provision

    admin = await connect(nats_stack.settings("admin"), "gw-commander-setup", retry_forever=False)
    await provision(admin)
    dsn = await create_database(pg_cluster.dsn, "gwctl")
    d = workdir / "gw-commander"
    d.mkdir(exist_ok=True)
    (d / "app.py").write_text(APP)
    ingest = start_ingest(nats_stack, dsn, d / "ingest.log")
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), d / "state", d / "commander.log").start()
    await cp.wait_ready(admin, HOST)
    with running_gateway(nats_stack, dsn, d / "gw", webhook_secret=SECRET) as gw:
        yield gw, dsn, d, admin
    cp.stop()
    cp.kill_children()
    ingest.stop()
    await admin.close()
    await drop_database(pg_cluster.dsn, dsn)


async def audit_rows(dsn: str, where: str, *args, want: int = 1, timeout: float = 30.0) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        rows: list = []
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT to_regclass('audit_log') IS NOT NULL"):
                rows = await conn.fetch(f"SELECT * FROM audit_log WHERE {where} ORDER BY time", *args)
                if len(rows) >= want:
                    return rows
            await asyncio.sleep(0.2)
        return rows
    finally:
        await conn.close()


async def test_operator_restart_is_audited_with_their_name_and_viewer_is_refused(stack):
    gw, dsn, d, _ = stack
    base = f"/api/v1/hosts/{HOST}/apps"
    async with (
        gw.async_client("admin") as admin,
        gw.async_client("operator") as op,
        gw.async_client("viewer") as viewer,
    ):
        spec = {
            "name": "web",
            "run": {"runtime": "python", "script": str(d / "app.py"), "interpreter": APP_PYTHON},
            "env": {"SECRET_KEY": "sk-abc-123"},
        }
        r = await admin.post(base, json={"spec": spec, "start": True})
        assert r.status_code == 201, r.text
        assert r.json()["app"]["spec"]["env"]["SECRET_KEY"] == "***"
        assert (
            await op.post(base, json={"spec": {**spec, "name": "web2"}})
        ).status_code == 403  # register is admin-only

        listing = (await viewer.get(base)).json()
        assert [a["spec"]["name"] for a in listing["apps"]] == ["web"]
        first_pid = listing["apps"][0]["pid"]

        r = await viewer.post(f"{base}/web/restart")
        assert r.status_code == 403
        await asyncio.sleep(1.05)
        r = await op.post(f"{base}/web/restart")
        assert r.status_code == 200, r.text
        assert r.json()["app"]["pid"] != first_pid
        r = await op.post(f"{base}/web/restart")
        assert r.status_code == 429 and "retry" in r.json()["detail"]
        r = await op.post(f"{base}/nope/restart")
        assert r.status_code == 404

    operator = gw.actor("operator")
    rows = await audit_rows(dsn, "action = 'apps.restart' AND actor = $1 AND host = $2", operator, HOST, want=3)
    assert sorted(r["code"] for r in rows) == [200, 404, 429]
    ok = next(r for r in rows if r["code"] == 200)
    assert (
        ok["target"] == "web" and ok["result"] == "ok" and ok["source"] == "api"
    )  # a session without the client header
    reg = await audit_rows(dsn, "action = 'apps.register' AND actor = 'admin'")
    assert "sk-abc-123" not in reg[0]["params"] and '"***"' in reg[0]["params"]
    # the viewer's read changed nothing and is not audited (it came before the restarts, stored
    # above); their refused restart never reached the host. Their login is audited, as every
    # login is.
    rows = await audit_rows(dsn, "actor = $1", gw.actor("viewer"), want=1, timeout=3)
    assert [r["action"] for r in rows] == ["auth.login"]


async def test_logs_tail_and_sse_stream(stack):
    gw, _, _, _ = stack
    base = f"/api/v1/hosts/{HOST}/apps/web"
    async with gw.async_client("operator") as op:
        deadline = time.monotonic() + 15
        while True:
            tail = (await op.get(f"{base}/logs", params={"lines": 10})).json()
            if len(tail["lines"]) >= 10 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert [x["line"] for x in tail["lines"]] == [f"gw line {i}" for i in range(10)]

        got: list[str] = []
        async with op.stream("GET", f"{base}/logs/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")

            async def read():
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line[6:].strip():
                        got.extend(x["line"] for x in json.loads(line[6:])["lines"])
                        if len(got) >= 10:
                            return

            await asyncio.sleep(1.1)  # past the 1/s limit of the restart in the previous test
            async with gw.async_client("operator") as op2:
                assert (await op2.post(f"{base}/restart")).status_code == 200
            await asyncio.wait_for(read(), 20)
        assert got[:10] == [f"gw line {i}" for i in range(10)]
    async with gw.async_client("viewer") as viewer:
        assert (await viewer.get(f"{base}/logs")).status_code == 403


async def test_signed_webhook(stack):
    gw, dsn, _, _ = stack
    url = f"{gw.url}/api/v1/webhook/command"
    cmd = {"host": HOST, "verb": "apps.status", "params": {"name": "web"}, "actor": "ci-deploy"}
    async with httpx.AsyncClient(timeout=30) as c:
        good = signed_webhook(SECRET, cmd)
        r = await c.post(url, content=good.content, headers=good.headers)
        assert r.status_code == 200, r.text
        assert r.json()["app"]["spec"]["name"] == "web"
        r = await c.post(url, content=good.content, headers=good.headers)
        assert r.status_code == 409  # replay
        wrong = signed_webhook("not-the-secret", {**cmd, "actor": "x1"})
        assert (await c.post(url, content=wrong.content, headers=wrong.headers)).status_code == 401
        old = signed_webhook(SECRET, {**cmd, "actor": "x2"}, ts=time.time() - 3600)
        r = await c.post(url, content=old.content, headers=old.headers)
        assert r.status_code == 401 and "window" in r.json()["detail"]
        tampered = signed_webhook(SECRET, {**cmd, "actor": "x3"})
        r = await c.post(url, content=tampered.content.replace(b"apps.status", b"apps.stop"), headers=tampered.headers)
        assert r.status_code == 401
        assert (await c.post(url, json=cmd)).status_code == 401  # unsigned
        bad = signed_webhook(SECRET, {"host": HOST, "verb": "apps.remove", "params": {"name": "web"}})
        assert (await c.post(url, content=bad.content, headers=bad.headers)).status_code == 400
    # apps.status is a read: not audited (a webhook's change is, as `webhook:<actor>` with source
    # webhook: tests/test_audit_coverage.py)
    assert await audit_rows(dsn, "actor = 'webhook:ci-deploy'", timeout=3) == []
