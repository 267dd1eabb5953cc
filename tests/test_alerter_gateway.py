"""The alerting routes of the gateway, against a real gateway process and an alerter: every
alerting route × role from the route table, secrets write-only through HTTP, validation errors
as 400 with the alerter's reason, test-send, active alerts and their history."""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx
import pytest

from services.gateway.roles import LEVEL, ROLES
from services.gateway.routes import ROUTE_ROLES
from tests.support.alerting import BotApiServer, alerting_role_examples, frame, roles_alerter  # noqa: F401 (fixture)
from tests.support.gateway import apply_ingest_schema, create_database, drop_database, running_gateway

pytestmark = pytest.mark.timeout(240)

MINE = ("/api/v1/alerts", "/api/v1/rules", "/api/v1/checks", "/api/v1/silences", "/api/v1/notifiers")
TOKEN = "777:gw-bot-token-SECRET-w"


@pytest.fixture(scope="module")
async def alert_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwalert")
    await apply_ingest_schema(dsn)
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def gw(nats_stack, alert_db, workdir, roles_alerter):
    with running_gateway(nats_stack, alert_db, workdir / "gw-alerting") as g:
        for role in ROLES:
            g.token(role)
        yield g


async def test_alerting_routes_every_role(gw):
    examples = alerting_role_examples()
    routes = [k for k in ROUTE_ROLES if k.split(" ", 1)[1].startswith(MINE)]
    assert len(routes) == 15
    failures = []
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
        for key in routes:
            need = ROUTE_ROLES[key]
            for role in (None, *ROLES):
                if key in examples:
                    method, path, body = await examples[key](gw, c, role)
                else:
                    method, path, body = key.split(" ", 1) + [None]
                r = await c.request(method, path, json=body, headers=gw.headers(role) if role else {})
                if role is None:
                    ok, want = r.status_code == 401, "401"
                elif LEVEL[role] >= LEVEL[need]:
                    ok, want = 200 <= r.status_code < 300, "2xx"
                else:
                    ok, want = r.status_code == 403, "403"
                if not ok:
                    failures.append(f"{key} as {role}: {r.status_code} {r.text[:200]}, expected {want}")
    assert not failures, "\n".join(failures)


async def test_secrets_write_only_validation_and_test_send(gw, roles_alerter):
    bot = BotApiServer(TOKEN).start()
    op = gw.headers("operator")
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
            r = await c.put(
                "/api/v1/notifiers/tg",
                json={"kind": "telegram", "base_url": bot.url, "bot_token": TOKEN, "chat_id": "5"},
                headers=op,
            )
            assert r.status_code == 200 and r.json()["bot_token_set"] is True and TOKEN not in r.text
            r = await c.get("/api/v1/notifiers", headers=gw.headers("viewer"))
            assert (
                r.status_code == 200
                and TOKEN not in r.text
                and any(n["name"] == "tg" and n["bot_token_set"] for n in r.json()["items"])
            )
            r = await c.post("/api/v1/notifiers/tg/test", json={"text": "through the gateway"}, headers=op)
            assert r.status_code == 200 and r.json()["sent"] is True
            assert len(bot.messages) == 1 and "through the gateway" in bot.texts()[0]
            r = await c.post("/api/v1/notifiers/nope/test", headers=op)
            assert r.status_code == 404
            r = await c.put("/api/v1/rules/bad", json={"field": "cpu.nonsense", "threshold": 1}, headers=op)
            assert r.status_code == 400 and "unknown metric field" in r.json()["detail"]
            r = await c.put(
                "/api/v1/rules/other", json={"name": "different", "field": "cpu.percent", "threshold": 1}, headers=op
            )
            assert r.status_code == 400
            r = await c.put("/api/v1/checks/c1", json={"url": "ftp://x"}, headers=op)
            assert r.status_code == 400 and "http" in r.json()["detail"]
            r = await c.post("/api/v1/silences", json={"id": "", "matchers": [], "starts": 0, "ends": 1}, headers=op)
            assert r.status_code == 400
        logs = gw.log()
        assert TOKEN not in logs
    finally:
        bot.stop()


async def test_active_alerts_and_history(gw, nats_stack, alert_db, roles_alerter, nc):
    a = roles_alerter
    host = f"gwa-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
        r = await c.put(
            "/api/v1/rules/gw_cpu", json={"field": "cpu.percent", "threshold": 90}, headers=gw.headers("operator")
        )
        assert r.status_code == 200
        # The module's alerter does not consume frames; feed its engine the way its consumer does.
        await a.engine.on_frame(frame(host, time.time(), 1, cpu=99), time.time())
        r = await c.get("/api/v1/alerts", headers=gw.headers("viewer"))
        items = [x for x in r.json()["items"] if x["host"] == host and x["rule"] == "gw_cpu"]
        assert r.status_code == 200 and [(x["rule"], x["state"]) for x in items] == [("gw_cpu", "firing")]
    # History is ingest's table; rows as ingest writes them.
    conn = await asyncpg.connect(alert_db)
    try:
        now = time.time()
        for i, state in enumerate(["firing", "resolved"]):
            await conn.execute(
                "INSERT INTO alert_events(time, fingerprint, rule, host, state, since, severity, labels, value, threshold, summary) VALUES (to_timestamp($1), 'fp1', 'gw_cpu', $2, $3, to_timestamp($4), 'warning', '{\"team\": \"x\"}', 99, 90, 'hot')",
                now - 10 + i,
                host,
                state,
                now - 10,
            )
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
        r = await c.get("/api/v1/alerts/history", params={"host": host}, headers=gw.headers("viewer"))
        assert r.status_code == 200
        assert [x["state"] for x in r.json()["items"]] == ["resolved", "firing"] and r.json()["items"][0]["labels"] == {
            "team": "x"
        }
        r = await c.get("/api/v1/alerts/history", params={"host": host, "limit": 1}, headers=gw.headers("viewer"))
        assert len(r.json()["items"]) == 1 and r.json()["next_offset"] == 1
