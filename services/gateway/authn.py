"""Who is calling: a bearer token (session or API) resolved to an Actor, checked against the
users table (a deactivated user or a lowered role takes effect within `auth_cache_s`)."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Hashable

import asyncpg
import msgspec
from litestar.di import NamedDependency

from .roles import LEVEL, ROLES
from .tokens import Signer, api_token_id, hash_api_token


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    """The authenticated caller; `username` is what audit records name."""

    username: str
    user_id: int
    role: str
    via: str = "session"  # session | api_token
    token_id: str = ""


# How controllers ask for the caller: `actor: ActorDep` (set by the role guard).
ActorDep = NamedDependency[Actor]


# A token in use is checked again this share of auth_cache_s before its answer expires, in the
# background: a client polling every second never waits for the database (which may be busy with
# a fleet's burst of inserts just then), and no answer is older than auth_cache_s.
REFRESH_AHEAD = 0.3


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, signer: Signer, cache_s: float) -> None:
        self.pool = pool
        self.signer = signer
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Actor | None]] = {}
        self._checks: dict[str, asyncio.Future] = {}  # token -> its check under way
        self._generation = 0  # bumped by forget_user: a check begun before it is not stored

    async def resolve(self, token: str) -> Actor | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            if hit[0] - now < self.cache_s * REFRESH_AHEAD and token not in self._checks:
                self._check(token)
            return hit[1]
        job = self._checks.get(token) or self._check(token)
        return await asyncio.shield(job)

    def _check(self, token: str) -> asyncio.Future:
        job = self._checks[token] = asyncio.ensure_future(self._fetch(token))

        def done(j: asyncio.Future) -> None:
            if self._checks.get(token) is j:
                del self._checks[token]
            # Retrieved here as well: a background check that failed (database away) leaves the
            # cached answer to expire, and the next request asks again and gets the error.
            if not j.cancelled():
                j.exception()

        job.add_done_callback(done)
        return job

    async def _fetch(self, token: str) -> Actor | None:
        started, generation = time.monotonic(), self._generation
        actor = await self._resolve(token)
        if generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (started + self.cache_s, actor)
        return actor

    def forget_user(self, user_id: int) -> None:
        """Drop cached tokens of a user this process changed (role, deactivation)."""
        self._generation += 1
        self._checks.clear()  # checks begun before the change: later requests ask anew
        for k in [k for k, (_, a) in self._cache.items() if a is not None and a.user_id == user_id]:
            self._cache.pop(k, None)

    async def _resolve(self, token: str) -> Actor | None:
        tid = api_token_id(token)
        if tid is not None:
            row = await self.pool.fetchrow(
                """SELECT t.token_hash, t.role AS token_role, u.id, u.username, u.role, u.is_active
                     FROM api_tokens t JOIN users u ON u.id = t.user_id
                    WHERE t.id = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())""",
                tid,
            )
            if row is None or not row["is_active"] or not hmac.compare_digest(row["token_hash"], hash_api_token(token)):
                return None
            # At most once per cache period per token: automation's last use, shown in the token list.
            await self.pool.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", tid)
            # A token never carries more than its owner has now.
            role = ROLES[min(LEVEL[row["token_role"]], LEVEL[row["role"]])]
            return Actor(username=row["username"], user_id=row["id"], role=role, via="api_token", token_id=tid)
        claims = self.signer.verify(token)
        if claims is None:
            return None
        row = await self.pool.fetchrow(
            "SELECT id, username, role, is_active, extract(epoch FROM sessions_valid_after)::float8 AS valid_after FROM users WHERE id = $1",
            claims.uid,
        )
        if row is None or not row["is_active"] or row["username"] != claims.u:
            return None
        if row["valid_after"] is not None and claims.iat < row["valid_after"]:
            return None  # opened before the password last changed
        return Actor(username=row["username"], user_id=row["id"], role=row["role"])


class LoginLimiter:
    """Failed logins per key in a sliding window; success clears the key."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._fails: dict[Hashable, list[float]] = {}

    def retry_after(self, key: Hashable, limit: int | None = None) -> float:
        now = time.monotonic()
        fails = [t for t in self._fails.get(key, ()) if t > now - self.window_s]
        if fails:
            self._fails[key] = fails
        else:
            self._fails.pop(key, None)
        if len(fails) < (limit or self.max_failures):
            return 0.0
        return max(0.1, fails[-(limit or self.max_failures)] + self.window_s - now)

    def failed(self, key: Hashable) -> None:
        if len(self._fails) > 50_000:
            self._fails.clear()
        self._fails.setdefault(key, []).append(time.monotonic())

    def succeeded(self, key: Hashable) -> None:
        self._fails.pop(key, None)
