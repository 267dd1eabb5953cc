"""Every change through the gateway leaves exactly one audit record, naming who, through which
door and what; reads leave none.

The route list comes from the gateway's own OpenAPI document: a new mutating route (POST, PUT,
PATCH, DELETE) without an example here fails the test, and so does one whose call is not audited
(or audited twice: once by the gateway and once by the commander). Run against the real fleet
(nats-server, PostgreSQL, ingest, commander, replicator, alerter, gateway as subprocesses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from services.gateway.guard import OPENAPI_PATH
from tests.support.alerting import BotApiServer
from tests.support.commander import RawBody, signed_webhook
from tests.support.gateway import create_database, drop_database
from tests.support.pipeline import fetch, fetchval, wait_until
from tests.support.robustness import HOST, Fleet

pytestmark = pytest.mark.timeout(400)

SECRET = "audit-coverage-webhook-secret"
BOT_TOKEN = "123456:audit-coverage-bot-token"
MUTATING = ("post", "put", "patch", "delete")
# Mutating routes that need no example: none today. Login is audited (success and failure, like
# Grafana and Cockpit do): a failed login is how a password guess shows up. There is no logout
# route (sessions are stateless tokens that expire).
NOT_CHANGES: dict[str, str] = {}
B = f"/api/v1/hosts/{HOST}"


async def count(dsn: str) -> int:
    return await fetchval(dsn, "SELECT count(*) FROM audit_log")


async def settled(dsn: str, quiet_s: float = 1.5, timeout: float = 30) -> int:
    """The audit_log count once nothing has arrived for `quiet_s` (ingest has caught up)."""
    deadline = time.monotonic() + timeout
    last, since = await count(dsn), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        n = await count(dsn)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return n
    raise AssertionError(f"audit_log still growing after {timeout}s")


async def new_records(dsn: str, before: int, want: int, timeout: float = 20) -> list:
    """Wait for `want` new rows past `before`, then long enough to see a surplus one."""

    async def enough():
        return await count(dsn) >= before + want or None

    if want:
        await wait_until(enough, timeout, what=f"{want} new audit record(s)")
    await settled(dsn, quiet_s=1.2)
    return await fetch(
        dsn, "SELECT actor, action, target, source, result, code, params::text AS params FROM audit_log ORDER BY time"
    )


Example = Callable[[], Awaitable[tuple[str, str, dict, str]]]  # -> method, path, request kwargs, target


async def test_every_mutating_route_is_audited_once(fresh_nats, pg_cluster, db_dsn, workdir):
    from libs.runtime import connect
    from libs.runtime.jetstream import provision

    st = fresh_nats
    admin_nc = await connect(st.settings("admin"), "audit-coverage", retry_forever=False)
    await provision(admin_nc)
    bot = BotApiServer(BOT_TOKEN).start()
    local = await create_database(pg_cluster.dsn, "auditcov")
    fleet = Fleet(st, db_dsn, local, workdir)
    fleet.gateway_settings = {"webhook_secret": SECRET}
    try:
        await fleet.start(admin_nc)
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            r = await http.post("/api/v1/auth/login", json={"username": "admin", "password": gw.admin_password})
            A = {"Authorization": f"Bearer {r.json()['token']}"}
            doc = (await http.get(f"{OPENAPI_PATH}/openapi.json")).json()
            mutating = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops if m in MUTATING} - set(
                NOT_CHANGES
            )
            reads = sorted(f"GET {p}" for p, ops in doc["paths"].items() if "get" in ops)

            # Things the examples act on, made first (each a change of its own, counted before).
            async def app(name: str, start: bool = False) -> None:
                spec = {"name": name, "run": {"runtime": "binary", "argv": ["sleep", "300"]}, "restart": "never"}
                r = await http.post(f"{B}/apps", json={"spec": spec, "start": start}, headers=A)
                assert r.status_code == 201, r.text

            async def job(argv: list[str]) -> str:
                r = await http.post(f"{B}/jobs", json={"argv": argv, "timeout_s": 600}, headers=A)
                assert r.status_code == 201, r.text
                return r.json()["job"]["id"]

            await app("del1")
            await app("start1")
            await app("hook1")
            await app("stop1", start=True)
            await app("restart1", start=True)
            stop_job = await job(["sleep", "300"])
            restart_job = await job(["true"])
            r = await http.post("/api/v1/auth/tokens", json={"name": "revoke-me"}, headers=A)
            revoke_id = r.json()["id"]
            for u in ("patchme", "deactme"):
                r = await http.post("/api/v1/users", json={"username": u, "password": "pw-" + u * 3}, headers=A)
                assert r.status_code == 201, r.text
            r = await http.post("/api/v1/hosts", json={"host": "revoke-1"}, headers=A)
            assert r.status_code == 201, r.text
            r = await http.post(
                "/api/v1/silences",
                json={
                    "id": "",
                    "matchers": [{"name": "host", "value": "web-1"}],
                    "starts": time.time(),
                    "ends": time.time() + 600,
                },
                headers=A,
            )
            silence = r.json()["id"]
            for kind in ("rules", "checks", "notifiers"):
                body = {
                    "rules": {"field": "cpu.percent", "threshold": 99},
                    "checks": {"url": "http://127.0.0.1:9/"},
                    "notifiers": {"kind": "telegram", "base_url": bot.url, "bot_token": BOT_TOKEN, "chat_id": "5"},
                }[kind]
                r = await http.put(f"/api/v1/{kind}/del1", json=body, headers=A)
                assert r.status_code == 200, r.text
            r = await http.put("/api/v1/notifiers/test1", json=body, headers=A)
            await asyncio.sleep(1.1)  # past the commander's one operation per app per second

            def ex(method: str, path: str, target: str, **kw) -> Example:
                async def make():
                    return method, path, kw, target

                return make

            pw = "pw-new-admin-password-1"
            examples: dict[str, Example] = {
                "POST /api/v1/auth/login": ex(
                    "POST", "/api/v1/auth/login", "admin", json={"username": "admin", "password": gw.admin_password}
                ),
                "POST /api/v1/auth/tokens": ex("POST", "/api/v1/auth/tokens", "", json={"name": "t1"}),
                "DELETE /api/v1/auth/tokens/{token_id}": ex("DELETE", f"/api/v1/auth/tokens/{revoke_id}", revoke_id),
                "POST /api/v1/users": ex(
                    "POST", "/api/v1/users", "newuser", json={"username": "newuser", "password": "pw-newuser-123"}
                ),
                "PATCH /api/v1/users/{username}": ex(
                    "PATCH", "/api/v1/users/patchme", "patchme", json={"role": "operator", "password": "pw-x-123456"}
                ),
                "DELETE /api/v1/users/{username}": ex("DELETE", "/api/v1/users/deactme", "deactme"),
                "POST /api/v1/hosts": ex("POST", "/api/v1/hosts", "web-7", json={"host": "web-7"}),
                "DELETE /api/v1/hosts/{host}/registration": ex(
                    "DELETE", "/api/v1/hosts/revoke-1/registration", "revoke-1"
                ),
                "POST /api/v1/hosts/{host}/apps": ex(
                    "POST",
                    f"{B}/apps",
                    "new1",
                    json={"spec": {"name": "new1", "run": {"runtime": "binary", "argv": ["true"]}, "restart": "never"}},
                ),
                "DELETE /api/v1/hosts/{host}/apps/{name}": ex("DELETE", f"{B}/apps/del1", "del1"),
                "POST /api/v1/hosts/{host}/apps/{name}/start": ex("POST", f"{B}/apps/start1/start", "start1"),
                "POST /api/v1/hosts/{host}/apps/{name}/stop": ex("POST", f"{B}/apps/stop1/stop", "stop1"),
                "POST /api/v1/hosts/{host}/apps/{name}/restart": ex("POST", f"{B}/apps/restart1/restart", "restart1"),
                "POST /api/v1/hosts/{host}/jobs": ex("POST", f"{B}/jobs", "", json={"argv": ["true"]}),
                "POST /api/v1/hosts/{host}/jobs/cleanup": ex(
                    "POST", f"{B}/jobs/cleanup", "", json={"older_than_s": 86400}
                ),
                "POST /api/v1/hosts/{host}/jobs/{job_id}/stop": ex("POST", f"{B}/jobs/{stop_job}/stop", stop_job),
                "POST /api/v1/hosts/{host}/jobs/{job_id}/restart": ex(
                    "POST", f"{B}/jobs/{restart_job}/restart", restart_job
                ),
                "PUT /api/v1/policy": ex("PUT", "/api/v1/policy", "", json={"executables": ["/usr/bin/id"]}),
                "DELETE /api/v1/policy": ex("DELETE", "/api/v1/policy", ""),
                "PUT /api/v1/hosts/{host}/policy": ex(
                    "PUT", f"{B}/policy", HOST, json={"executables": ["/usr/bin/id"]}
                ),
                "DELETE /api/v1/hosts/{host}/policy": ex("DELETE", f"{B}/policy", HOST),
                "POST /api/v1/hosts/{host}/replication/sync": ex("POST", f"{B}/replication/sync", "users"),
                "PUT /api/v1/rules/{name}": ex(
                    "PUT", "/api/v1/rules/r1", "r1", json={"field": "cpu.percent", "threshold": 95}
                ),
                "DELETE /api/v1/rules/{name}": ex("DELETE", "/api/v1/rules/del1", "del1"),
                "PUT /api/v1/checks/{name}": ex("PUT", "/api/v1/checks/c1", "c1", json={"url": "http://127.0.0.1:9/"}),
                "DELETE /api/v1/checks/{name}": ex("DELETE", "/api/v1/checks/del1", "del1"),
                "POST /api/v1/silences": ex(
                    "POST",
                    "/api/v1/silences",
                    "",
                    json={
                        "id": "",
                        "matchers": [{"name": "host", "value": "web-1"}],
                        "starts": time.time(),
                        "ends": time.time() + 600,
                    },
                ),
                "DELETE /api/v1/silences/{silence_id}": ex("DELETE", f"/api/v1/silences/{silence}", silence),
                "PUT /api/v1/notifiers/{name}": ex(
                    "PUT",
                    "/api/v1/notifiers/n1",
                    "n1",
                    json={"kind": "telegram", "base_url": bot.url, "bot_token": BOT_TOKEN, "chat_id": "5"},
                ),
                "DELETE /api/v1/notifiers/{name}": ex("DELETE", "/api/v1/notifiers/del1", "del1"),
                "POST /api/v1/notifiers/{name}/test": ex("POST", "/api/v1/notifiers/test1/test", "test1", json={}),
                "POST /api/v1/webhook/command": ex(
                    "POST",
                    "/api/v1/webhook/command",
                    "hook1",
                    raw=signed_webhook(
                        SECRET, {"host": HOST, "verb": "apps.start", "actor": "ci", "params": {"name": "hook1"}}
                    ),
                ),
                # Last: a changed admin password ends the session the examples use.
                "POST /api/v1/auth/password": ex(
                    "POST",
                    "/api/v1/auth/password",
                    "admin",
                    json={"current_password": gw.admin_password, "new_password": pw},
                ),
            }
            assert mutating - set(examples) == set(), "mutating routes without an audit example (add one)"
            assert set(examples) - mutating == set(), "examples of routes the gateway no longer has"

            before = await settled(fleet.dsn)
            problems: list[str] = []
            for key, make in examples.items():
                method, path, kw, target = await make()
                raw: RawBody | None = kw.pop("raw", None)
                if raw is not None:
                    r = await http.request(method, path, content=raw.content, headers=raw.headers)
                else:
                    r = await http.request(method, path, headers={**A, "X-Fleetwatch-Client": "ui"}, **kw)
                if r.status_code >= 400:
                    problems.append(f"{key}: the example failed: {r.status_code} {r.text[:300]}")
                    continue
                rows = await new_records(fleet.dsn, before, 1)
                new = rows[before:]
                before = len(rows)
                if len(new) != 1:
                    problems.append(f"{key}: {len(new)} audit records, expected 1: {[dict(x) for x in new]}")
                    continue
                rec = new[0]
                want_actor = "webhook:ci" if raw is not None else "admin"
                want_source = "webhook" if raw is not None else "ui"
                if rec["actor"] != want_actor or rec["source"] != want_source or rec["result"] != "ok":
                    problems.append(f"{key}: {dict(rec)}, expected actor {want_actor}, source {want_source}, ok")
                if not rec["target"] or (target and rec["target"] != target):
                    problems.append(f"{key}: target {rec['target']!r}, expected {target or 'one'!r}")
                for secret in (BOT_TOKEN, gw.admin_password, pw, "pw-newuser-123", "pw-x-123456"):
                    if secret in rec["params"]:
                        problems.append(f"{key}: a secret in the audit record: {dict(rec)}")
            assert not problems, "\n".join(problems)

            # Reads change nothing: no audit record (from the gateway nor the commander).
            r = await http.post("/api/v1/auth/login", json={"username": "admin", "password": pw})
            A = {"Authorization": f"Bearer {r.json()['token']}"}
            before = await settled(fleet.dsn)
            skip = ("/stream", "/logs/stream", "{")  # live streams; templated reads are done below
            for key in reads:
                path = key.split(" ", 1)[1]
                if not path.startswith("/api/") or any(s in path for s in skip):
                    continue
                await http.get(path, headers=A)
            for path in (f"{B}/apps", f"{B}/jobs", f"{B}/jobs/{restart_job}", f"{B}/scan", f"{B}/apps/start1"):
                r = await http.get(path, headers=A)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            await http.get(f"{B}/apps/start1/logs", headers=A)
            await http.get(f"{B}/jobs/{restart_job}/logs", headers=A)
            rows = await new_records(fleet.dsn, before, 0)
            assert len(rows) == before, f"reads were audited: {[dict(x) for x in rows[before:]]}"
    finally:
        fleet.stop()
        bot.stop()
        await admin_nc.close()
        await drop_database(pg_cluster.dsn, local)


async def test_source_names_the_door(fresh_nats, pg_cluster, db_dsn, workdir):
    """ui and cli by the header (on a session), api-token by the token whatever the header says,
    api for a session without (or with an unknown) header, webhook for the signed webhook."""
    from libs.runtime import connect
    from libs.runtime.jetstream import provision

    st = fresh_nats
    admin_nc = await connect(st.settings("admin"), "audit-doors", retry_forever=False)
    await provision(admin_nc)
    local = await create_database(pg_cluster.dsn, "auditdoors")
    fleet = Fleet(st, db_dsn, local, workdir)
    fleet.gateway_settings = {"webhook_secret": SECRET}
    try:
        await fleet.start(admin_nc)
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            r = await http.post("/api/v1/auth/login", json={"username": "admin", "password": gw.admin_password})
            S = {"Authorization": f"Bearer {r.json()['token']}"}
            r = await http.post("/api/v1/auth/tokens", json={"name": "bot"}, headers=S)
            T = {"Authorization": f"Bearer {r.json()['token']}"}
            cases = [
                ({**S, "X-Fleetwatch-Client": "ui"}, "ui"),
                ({**S, "X-Fleetwatch-Client": "cli"}, "cli"),
                ({**T, "X-Fleetwatch-Client": "ui"}, "api-token"),  # the header cannot relabel a token
                (S, "api"),
                ({**S, "X-Fleetwatch-Client": "admin-console"}, "api"),  # unknown: ignored
            ]
            for i, (headers, source) in enumerate(cases):
                # A gateway change and a commander change: both doors' records carry the source.
                r = await http.put(
                    f"/api/v1/rules/door{i}", json={"field": "cpu.percent", "threshold": 90}, headers=headers
                )
                assert r.status_code == 200, r.text
                r = await http.post(f"{B}/jobs", json={"argv": ["true"]}, headers=headers)
                assert r.status_code == 201, r.text
                job = r.json()["job"]["id"]

                async def stored(i=i, job=job):
                    rows = await fetch(
                        fleet.dsn,
                        "SELECT target, source FROM audit_log WHERE target = ANY($1::text[])",
                        [f"door{i}", job],
                    )
                    return rows if len(rows) == 2 else None

                rows = await wait_until(stored, 20, what=f"the audit records of door {source}")
                assert {x["source"] for x in rows} == {source}, (source, [dict(x) for x in rows])
            spec = {"name": "hook", "run": {"runtime": "binary", "argv": ["true"]}, "restart": "never"}
            r = await http.post(f"{B}/apps", json={"spec": spec}, headers=S)
            assert r.status_code == 201, r.text
            await asyncio.sleep(1.1)  # past the commander's one operation per app per second
            body = signed_webhook(
                SECRET, {"host": HOST, "verb": "apps.start", "actor": "deploy", "params": {"name": "hook"}}
            )
            r = await http.post("/api/v1/webhook/command", content=body.content, headers=body.headers)
            assert r.status_code == 200, r.text

            async def hooked():
                return await fetchval(
                    fleet.dsn, "SELECT source FROM audit_log WHERE actor = 'webhook:deploy' AND action = 'apps.start'"
                )

            assert await wait_until(hooked, 20, what="the webhook's audit record") == "webhook"
            # A failed login is audited under the name it tried, the password nowhere.
            r = await http.post(
                "/api/v1/auth/login",
                json={"username": "admin", "password": "wrong-guess-123"},
                headers={"X-Fleetwatch-Client": "cli"},
            )
            assert r.status_code == 401, r.text

            async def refused():
                return (
                    await fetch(
                        fleet.dsn,
                        "SELECT actor, source, result, params::text AS p FROM audit_log WHERE code = 401",
                    )
                    or None
                )

            rows = await wait_until(refused, 20, what="the failed login's audit record")
            assert [(x["actor"], x["source"], x["result"]) for x in rows] == [("admin", "cli", "error")]
            assert "wrong-guess-123" not in rows[0]["p"]
            # The audit API filters by door.
            r = await http.get("/api/v1/audit", params={"source": "cli", "limit": 500}, headers=S)
            assert r.status_code == 200 and r.json()["items"], r.text
            assert {x["source"] for x in r.json()["items"]} == {"cli"}
            r = await http.get("/api/v1/audit", params={"source": "NOT A DOOR"}, headers=S)
            assert r.status_code == 400, r.text
    finally:
        fleet.stop()
        await admin_nc.close()
        await drop_database(pg_cluster.dsn, local)
