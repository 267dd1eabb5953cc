"""The gateway's token cache against the real PostgreSQL: a token in use is checked again in the
background before its answer expires (a request does not wait on a busy database), and an answer
is never served past auth_cache_s."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from libs.runtime.db import migrate
from services.gateway.app import MIGRATIONS
from services.gateway.authn import REFRESH_AHEAD, Authenticator
from services.gateway.tokens import Signer

pytestmark = pytest.mark.timeout(60)

CACHE_S = 1.0


@pytest.fixture
async def setup(db_dsn):
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    await migrate(pool, "gateway", MIGRATIONS)
    uid = await pool.fetchval(
        "INSERT INTO users (username, system_uid, system_gid, role) VALUES ('cache1', 3001, 3001, 'operator') RETURNING id"
    )
    signer = Signer("k" * 32)
    token, _ = signer.issue(uid, "cache1", 3600)
    yield pool, Authenticator(pool, signer, CACHE_S), token, uid
    await pool.close()


async def test_refreshed_in_the_background_so_a_busy_database_is_not_waited_for(setup, db_dsn):
    pool, auth, token, _ = setup
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert (await auth.resolve(token)).role == "operator"
    await asyncio.sleep(CACHE_S * (1 - REFRESH_AHEAD / 2))  # inside the refresh window
    assert (await auth.resolve(token)).role == "operator"  # from the cache; a check starts
    for _ in range(200):  # bounded: 10 s
        if not auth._checks:
            break
        await asyncio.sleep(0.05)
    blocker = await asyncpg.connect(db_dsn)
    try:
        # From now on any read of users waits for this transaction.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        await blocker.execute("UPDATE users SET role = 'viewer' WHERE username = 'cache1'")
        await asyncio.sleep(max(0.0, t0 + CACHE_S + 0.05 - loop.time()))
        # Past the first answer's expiry: the refreshed one is served at once, no database read.
        assert (await asyncio.wait_for(auth.resolve(token), 0.5)).role == "operator"
        await asyncio.sleep(CACHE_S)
        late = asyncio.ensure_future(auth.resolve(token))
        await asyncio.sleep(0.2)
        assert not late.done()  # an expired answer is never served: it waits for the database
        await tx.commit()
        assert (await asyncio.wait_for(late, 10)).role == "viewer"
    finally:
        await blocker.close()


async def test_a_polling_client_sees_a_change_within_the_cache_period(setup):
    pool, auth, token, _ = setup
    assert (await auth.resolve(token)).role == "operator"
    await pool.execute("UPDATE users SET is_active = false WHERE username = 'cache1'")
    changed_at = asyncio.get_running_loop().time()
    while (await auth.resolve(token)) is not None:
        assert asyncio.get_running_loop().time() - changed_at < CACHE_S + 1.0  # bounded, with margin for a loaded box
        await asyncio.sleep(0.02)
