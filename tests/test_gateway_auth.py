"""Gateway auth and users against the real gateway process, NATS and PostgreSQL: login, tokens,
rate limit, inactive users, admin CRUD with uid allocation, fleet.users.changed, system routes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from libs.runtime import connect
from libs.schemas import Codec, UserChange
from libs.schemas import subjects as s
from tests.conftest import ROOT
from tests.support.gateway import create_database, drop_database, running_gateway

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
async def auth_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwauth")
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


@pytest.fixture(scope="module")
def gw(nats_stack, auth_db, workdir):
    with running_gateway(
        nats_stack,
        auth_db,
        workdir / "gw-auth",
        login_max_failures="3",
        login_window_s="60",
        cors_origins="https://ui.example",
    ) as g:
        yield g


async def test_admin_created_from_password_file_and_login_works(gw, auth_db):
    async with gw.async_client() as c:
        r = await c.post("/api/v1/auth/login", json={"username": "admin", "password": gw.admin_password})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["role"] == "admin" and body["token"]
        me = await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
        assert me.json() == {"username": "admin", "user_id": me.json()["user_id"], "role": "admin", "via": "session"}
    conn = await asyncpg.connect(auth_db)
    try:
        h = await conn.fetchval("SELECT password_hash FROM users WHERE username='admin'")
    finally:
        await conn.close()
    assert h.startswith("$6$") and gw.admin_password not in h  # sha512-crypt, pam_unix-readable


async def test_bad_password_401_then_rate_limited_429(gw):
    for role in ("admin", "operator", "viewer"):
        gw.token(role)  # sessions the later tests use, made before admin's logins are limited
    async with gw.async_client() as c:
        for _ in range(3):
            r = await c.post("/api/v1/auth/login", json={"username": "admin", "password": "wrong-password"})
            assert r.status_code == 401 and "wrong username or password" in r.text
        r = await c.post("/api/v1/auth/login", json={"username": "admin", "password": gw.admin_password})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        r = await c.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
        assert r.status_code == 401  # another key (username) is not limited
        bad = await c.post("/api/v1/auth/login", json={"username": "admin"})
        assert bad.status_code == 400 and "password" in bad.text


async def test_bad_and_missing_tokens_are_401(gw):
    async with gw.async_client() as c:
        assert (await c.get("/api/v1/hosts")).status_code == 401
        r = await c.get("/api/v1/hosts", headers={"Authorization": "Bearer forged.signature"})
        assert r.status_code == 401 and "invalid" in r.text
        good = gw.token("viewer")
        body, _, sig = good.partition(".")
        tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
        assert (await c.get("/api/v1/hosts", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401


async def test_users_crud_allocates_uids_never_returns_hashes_and_announces(gw, nats_stack, auth_db):
    nc = await connect(nats_stack.settings("admin"), "test-users-changed", retry_forever=False)
    changes: asyncio.Queue = asyncio.Queue()
    codec = Codec(UserChange)

    async def cb(msg):
        await changes.put(codec.decode(msg.data))

    await nc.subscribe(s.USERS_CHANGED, cb=cb)
    await nc.flush()
    try:
        async with gw.async_client("admin") as c:
            # Concurrent creates: every uid distinct, gid = uid (private group), none colliding.
            rs = await asyncio.gather(
                *(
                    c.post("/api/v1/users", json={"username": f"crew{i}", "password": f"pass-word-{i}"})
                    for i in range(8)
                )
            )
            assert all(r.status_code == 201 for r in rs), [r.text for r in rs]
            uids = [r.json()["system_uid"] for r in rs]
            assert len(set(uids)) == 8 and all(u >= 2000 for u in uids)
            assert all(r.json()["system_gid"] == r.json()["system_uid"] for r in rs)
            # A gid taken explicitly (a shared group) is never handed out as someone's private group.
            shared = max(uids) + 5
            r = await c.post("/api/v1/users", json={"username": "grouped", "system_gid": shared})
            assert r.status_code == 201 and r.json()["system_gid"] == shared
            for i in range(6):
                r2 = await c.post("/api/v1/users", json={"username": f"after{i}"})
                assert r2.status_code == 201 and r2.json()["system_gid"] != shared and r2.json()["system_uid"] != shared
            assert (
                await c.post("/api/v1/users", json={"username": "dupuid", "system_uid": uids[0]})
            ).status_code == 409
            assert (await c.post("/api/v1/users", json={"username": "crew0"})).status_code == 409
            assert (await c.post("/api/v1/users", json={"username": "Bad Name!"})).status_code == 400
            assert (await c.post("/api/v1/users", json={"username": "shorty", "password": "short"})).status_code == 400
            listing = await c.get("/api/v1/users")
            assert listing.status_code == 200
            text = listing.text
            assert "password" not in text and "$6$" not in text and "pass-word-" not in text
            # Deactivate: the user can no longer log in, and an existing session stops working.
            tok = (await c.post("/api/v1/auth/login", json={"username": "crew1", "password": "pass-word-1"})).json()[
                "token"
            ]
            assert (await c.get("/api/v1/hosts", headers={"Authorization": f"Bearer {tok}"})).status_code == 200
            d = await c.delete("/api/v1/users/crew1")
            assert d.status_code == 200 and d.json()["is_active"] is False
            assert (await c.get("/api/v1/hosts", headers={"Authorization": f"Bearer {tok}"})).status_code == 401
            r = await c.post("/api/v1/auth/login", json={"username": "crew1", "password": "pass-word-1"})
            assert r.status_code == 403 and "deactivated" in r.text
            # Role change and password change.
            p = await c.patch("/api/v1/users/crew2", json={"role": "operator", "password": "new-pass-word"})
            assert p.status_code == 200 and p.json()["role"] == "operator"
            r = await c.post("/api/v1/auth/login", json={"username": "crew2", "password": "new-pass-word"})
            assert r.status_code == 201 and r.json()["role"] == "operator"
            assert (await c.patch("/api/v1/users/ghost", json={"email": "a@b.c"})).status_code == 404
            assert (await c.patch("/api/v1/users/crew2", json={})).status_code == 400
        seen = []
        while True:
            try:
                seen.append(await asyncio.wait_for(changes.get(), 3))
            except TimeoutError:
                break
        ops = [(ch.op, ch.username) for ch in seen]
        assert ("created", "crew0") in ops and ("deactivated", "crew1") in ops and ("updated", "crew2") in ops
        assert all("pass" not in codec.encode(ch).decode() for ch in seen)
    finally:
        await nc.close()


async def test_api_token_shown_once_stored_hashed_capped_and_revocable(gw, auth_db):
    async with gw.async_client("operator") as c:
        r = await c.post("/api/v1/auth/tokens", json={"name": "ci", "role": "viewer"})
        assert r.status_code == 201, r.text
        tok = r.json()
        assert tok["token"].startswith("fwk_") and tok["role"] == "viewer"
        assert (await c.post("/api/v1/auth/tokens", json={"role": "admin"})).status_code == 403
        listed = (await c.get("/api/v1/auth/tokens")).json()
        assert (
            [t["id"] for t in listed] == [tok["id"]] and "token" not in listed[0] and listed[0]["last_used_at"] is None
        )
    auth = {"Authorization": f"Bearer {tok['token']}"}
    async with gw.async_client() as c:
        me = (await c.get("/api/v1/auth/me", headers=auth)).json()
        assert me["via"] == "api_token" and me["role"] == "viewer" and me["username"] == gw.actor("operator")
        assert (await c.get("/api/v1/audit", headers=auth)).status_code == 403  # viewer token of an operator
    async with gw.async_client("operator") as c:
        assert (await c.get("/api/v1/auth/tokens")).json()[0]["last_used_at"] is not None
    conn = await asyncpg.connect(auth_db)
    try:
        stored = await conn.fetchval("SELECT token_hash FROM api_tokens WHERE id=$1", tok["id"])
    finally:
        await conn.close()
    assert stored != tok["token"] and tok["token"] not in stored and len(stored) == 64
    async with gw.async_client("operator") as c:
        assert (await c.delete(f"/api/v1/auth/tokens/{tok['id']}")).status_code == 204
        assert (await c.delete(f"/api/v1/auth/tokens/{tok['id']}")).status_code == 404
    async with gw.async_client() as c:
        assert (await c.get("/api/v1/auth/me", headers=auth)).status_code == 401


async def test_system_routes_docs_and_metrics(gw):
    async with gw.async_client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["nats"] and ready.json()["db"]
        doc = (await c.get("/api/docs/openapi.json")).json()
        assert "/api/v1/hosts" in doc["paths"] and "/api/v1/users" in doc["paths"]
        for page, marker in (("/api/docs/swagger", "SwaggerUIBundle"), ("/api/docs/redoc", "redoc")):
            r = await c.get(page)
            assert r.status_code == 200 and marker in r.text and "fleetwatch gateway" in r.text
        root = await c.get("/")
        index = ROOT / "ui" / "dist" / "index.html"
        if index.is_file():  # the built web UI and its assets
            assert root.status_code == 200 and root.text == index.read_text()
            asset = next((ROOT / "ui" / "dist" / "assets").iterdir())
            a = await c.get(f"/assets/{asset.name}")
            assert a.status_code == 200 and a.content == asset.read_bytes()
        else:  # not built yet: a page pointing at the API docs
            assert root.status_code == 200 and "/api/docs" in root.text
        assert (await c.get("/metrics")).status_code == 401
    async with gw.async_client("viewer") as c:
        await c.get("/api/v1/hosts")
        m = await c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        assert 'fleetwatch_gateway_requests_total{method="GET",route="/api/v1/hosts",status="200"}' in m.text
        assert "fleetwatch_gateway_login_failures_total" in m.text
    assert gw.admin_password not in gw.log()


async def test_cors_only_for_configured_origins(gw):
    async with gw.async_client() as c:
        pre = await c.options(
            "/api/v1/hosts",
            headers={
                "Origin": "https://ui.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code in (200, 204) and pre.headers["access-control-allow-origin"] == "https://ui.example"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        other = await c.options(
            "/api/v1/hosts", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    async with gw.async_client("viewer") as c:
        r = await c.get("/api/v1/hosts", headers={"Origin": "https://ui.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ui.example"


async def test_password_spraying_from_one_client_is_limited_too(gw):
    """Last in this module: afterwards this client (127.0.0.1) cannot log in for a minute."""
    async with gw.async_client() as c:
        codes = []
        for i in range(31):  # 10 x login_max_failures (30) per client, over many accounts, 2 tries each
            r = await c.post("/api/v1/auth/login", json={"username": f"spray{i // 2}", "password": "guess-guess"})
            codes.append(r.status_code)
            if r.status_code == 429:
                break
        # Earlier tests of this module failed a few logins from this client too (they count).
        assert codes[-1] == 429 and 20 <= len(codes) <= 31 and set(codes[:-1]) == {401}
        r = await c.post("/api/v1/auth/login", json={"username": "someone-else", "password": "x"})
        assert r.status_code == 429
