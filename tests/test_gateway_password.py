"""Changing your own password (POST /api/v1/auth/password) against the real gateway, NATS and
PostgreSQL: the current password is required and its guesses are limited, the new one is a
crypt(3) hash that logins check at once, and fleet.users.changed says "password" without it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from passlib.hash import sha512_crypt

from libs.runtime import connect
from libs.schemas import Codec, UserChange
from libs.schemas import subjects as s
from tests.support.gateway import create_database, drop_database, running_gateway

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
async def pw_gw(nats_stack, pg_cluster, workdir):
    dsn = await create_database(pg_cluster.dsn, "gwpw")
    with running_gateway(nats_stack, dsn, workdir / "gw-password", login_max_failures="3") as g:
        yield g, dsn
    await drop_database(pg_cluster.dsn, dsn)


async def new_user_session(gw, c, username: str, password: str) -> dict[str, str]:
    r = await c.post(
        "/api/v1/users",
        json={"username": username, "password": password, "role": "viewer"},
        headers=gw.headers("admin"),
    )
    assert r.status_code == 201, r.text
    return await login_headers(c, username, password)


async def login_headers(c, username: str, password: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def login_status(c, username: str, password: str) -> int:
    return (await c.post("/api/v1/auth/login", json={"username": username, "password": password})).status_code


async def test_user_changes_own_password(pw_gw, nats_stack):
    gw, dsn = pw_gw
    codec = Codec(UserChange)
    changes: list[UserChange] = []
    nc = await connect(nats_stack.settings("admin"), "test-password", retry_forever=False)

    async def on_change(msg):
        assert b"pass-" not in msg.data  # neither password, nor anything like it
        changes.append(codec.decode(msg.data))

    await nc.subscribe(s.USERS_CHANGED, cb=on_change)
    await nc.flush()  # subscribed at the server before the user is created
    try:
        async with gw.async_client() as c:
            me = await new_user_session(gw, c, "dora", "first-pass-1")

            def change(cur: str, new: str):
                return c.post("/api/v1/auth/password", json={"current_password": cur, "new_password": new}, headers=me)

            r = await change("not-my-pass-1", "second-pass-2")
            assert r.status_code == 403 and "current password" in r.json()["detail"]
            r = await change("first-pass-1", "short")
            assert r.status_code == 400 and "new_password" in r.text
            r = await change("first-pass-1", "first-pass-1")
            assert r.status_code == 400 and "differ" in r.json()["detail"]
            assert await login_status(c, "dora", "first-pass-1") == 201  # nothing changed yet
            other = await login_headers(c, "dora", "first-pass-1")  # a second device (or a thief)
            r = await change("first-pass-1", "second-pass-2")
            assert r.status_code == 200, r.text
            assert await login_status(c, "dora", "first-pass-1") == 401
            assert await login_status(c, "dora", "second-pass-2") == 201
            # every session opened with the old password ends, the one that made the change too;
            # the answer carries its successor
            assert (await c.get("/api/v1/auth/me", headers=me)).status_code == 401
            assert (await c.get("/api/v1/auth/me", headers=other)).status_code == 401
            fresh = {"Authorization": f"Bearer {r.json()['token']}"}
            assert r.json()["username"] == "dora" and r.json()["role"] == "viewer"
            assert (await c.get("/api/v1/auth/me", headers=fresh)).json()["username"] == "dora"
        conn = await asyncpg.connect(dsn)
        try:
            stored = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'dora'")
        finally:
            await conn.close()
        assert stored.startswith("$6$") and sha512_crypt.verify("second-pass-2", stored)
        for _ in range(50):
            if any(ch.op == "password" for ch in changes):
                break
            await asyncio.sleep(0.1)
        assert [(ch.op, ch.username) for ch in changes if ch.username == "dora"] == [
            ("created", "dora"),
            ("password", "dora"),
        ]
    finally:
        await nc.close()


async def test_wrong_current_password_guesses_are_limited(pw_gw):
    gw, _ = pw_gw
    async with gw.async_client() as c:
        me = await new_user_session(gw, c, "eve", "eve-pass-word-1")
        body = {"current_password": "guess-guess", "new_password": "eve-pass-word-2"}
        for _ in range(3):
            assert (await c.post("/api/v1/auth/password", json=body, headers=me)).status_code == 403
        # limited now, even with the right current password; the password is unchanged
        r = await c.post("/api/v1/auth/password", json={**body, "current_password": "eve-pass-word-1"}, headers=me)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert await login_status(c, "eve", "eve-pass-word-1") == 201
        assert await login_status(c, "eve", "eve-pass-word-2") == 401


async def test_admin_reset_ends_the_users_sessions_but_not_their_api_tokens(pw_gw):
    gw, _ = pw_gw
    async with gw.async_client() as c:
        me = await new_user_session(gw, c, "fay", "fay-pass-word-1")
        r = await c.post("/api/v1/auth/tokens", json={"name": "ci", "role": "viewer"}, headers=me)
        assert r.status_code == 201, r.text
        api_token = {"Authorization": f"Bearer {r.json()['token']}"}
        r = await c.patch("/api/v1/users/fay", json={"password": "fay-pass-word-2"}, headers=gw.headers("admin"))
        assert r.status_code == 200, r.text
        assert (await c.get("/api/v1/auth/me", headers=me)).status_code == 401
        assert (await c.get("/api/v1/auth/me", headers=api_token)).json()["username"] == "fay"
        assert (
            await c.get("/api/v1/auth/me", headers=await login_headers(c, "fay", "fay-pass-word-2"))
        ).status_code == 200
        # a change of anything else leaves sessions alone
        again = await login_headers(c, "fay", "fay-pass-word-2")
        assert (
            await c.patch("/api/v1/users/fay", json={"shell": "/bin/sh"}, headers=gw.headers("admin"))
        ).status_code == 200
        assert (await c.get("/api/v1/auth/me", headers=again)).status_code == 200
