"""Login (password -> signed session token), who am I, and API tokens for automation."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath, JSONBody

from ..auditing import note
from ..authn import ActorDep
from ..errors import errors
from ..roles import LEVEL, Role
from ..state import GatewayDep
from ..tokens import new_api_token

MAX_USERNAME = 64
MAX_PASSWORD = 1024
# Besides (account, client): a client over all accounts (password spraying) and an account over
# all clients (one account guessed at from many addresses) may fail this many times
# login_max_failures within the window.
SPRAY_FACTOR = 10
ACCOUNT_FACTOR = 4


class LoginRequest(msgspec.Struct, kw_only=True, frozen=True):
    # Lengths and characters are checked by the handler, not the decoder: a malformed login must
    # be answered and counted like any failed one (msgspec's 400 would be neither counted nor,
    # for a NUL, reached: the database and crypt(3) refuse it with a 500).
    username: Annotated[str, msgspec.Meta(description=f"1-{MAX_USERNAME} characters, no control characters")]
    password: Annotated[str, msgspec.Meta(description=f"1-{MAX_PASSWORD} characters, no NUL")]


def login_problem(username: str, password: str) -> str:
    """Why a login cannot be right whoever the account is ('' when it might be). Decided from the
    request alone, so it answers the same for an account that exists and one that does not."""
    if not 1 <= len(username) <= MAX_USERNAME:
        return f"the username must be 1-{MAX_USERNAME} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
        return "the username contains a control character"
    if not 1 <= len(password) <= MAX_PASSWORD:
        return f"the password must be 1-{MAX_PASSWORD} characters"
    if "\x00" in password:
        return "the password contains a NUL character"
    return ""


class LoginResponse(msgspec.Struct, kw_only=True, frozen=True):
    token: str
    token_type: str = "bearer"
    expires_at: float
    username: str
    role: str


class Me(msgspec.Struct, kw_only=True, frozen=True):
    username: str
    user_id: int
    role: str
    via: str


class TokenRequest(msgspec.Struct, kw_only=True, frozen=True):
    name: Annotated[str, msgspec.Meta(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    # Defaults to the caller's role; never more than it.
    role: Role | None = None
    expires_in_s: Annotated[int, msgspec.Meta(gt=0, le=10 * 365 * 86400)] | None = None


class TokenInfo(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    name: str
    role: str
    username: str
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked: bool = False


class NewToken(msgspec.Struct, kw_only=True, frozen=True):
    """The token is in this answer only; the server keeps a hash of it."""

    id: str
    token: str
    name: str
    role: str
    expires_at: float | None = None


def _ts(v: dt.datetime | None) -> float | None:
    return None if v is None else v.timestamp()


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post(
        "/login",
        summary="Password login; returns a signed session token",
        responses=errors(400, 401, 403, 429),
        security=[],
    )
    async def login(self, data: JSONBody[LoginRequest], request: Request, gw: GatewayDep) -> LoginResponse:
        # The TCP peer, or what a configured proxy (forwarded_allow_ips) says the client is: a
        # client's own X-Forwarded-For is not believed, so rotating it changes nothing.
        client = request.client.host if request.client else "?"
        username = data.username[:MAX_USERNAME]  # a malformed one is still counted, bounded
        note(actor=username, target=username)  # success or failure, the attempt is audited
        limits = gw.limiter
        # Tuples: no username can spell another kind of key.
        keys = (("login", username, client), ("client", client), ("account", username))
        wait = max(
            limits.retry_after(keys[0]),
            limits.retry_after(keys[1], SPRAY_FACTOR * limits.max_failures),
            limits.retry_after(keys[2], ACCOUNT_FACTOR * limits.max_failures),
        )
        if wait:
            gw.logins_limited += 1
            raise HTTPException(
                status_code=429,
                detail="too many failed logins; try again later",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        why = login_problem(data.username, data.password)
        if why:
            for k in keys:
                limits.failed(k)
            gw.logins_failed += 1
            raise HTTPException(status_code=400, detail=f"malformed login: {why}")
        row = await gw.pool.fetchrow(
            "SELECT id, username, password_hash, role, is_active FROM users WHERE username = $1", data.username
        )
        ok = await gw.hasher.verify_async(data.password, row["password_hash"] if row else None)
        if not ok:
            for k in keys:
                limits.failed(k)
            gw.logins_failed += 1
            raise HTTPException(status_code=401, detail="wrong username or password")
        if not row["is_active"]:
            gw.logins_failed += 1
            raise HTTPException(status_code=403, detail="account is deactivated")
        # The account-wide count stays: the owner signing in must not reset an attacker's budget.
        limits.succeeded(keys[0])
        gw.logins_ok += 1
        token, exp = gw.signer.issue(row["id"], row["username"], gw.config.session_ttl_s)
        return LoginResponse(token=token, expires_at=exp, username=row["username"], role=row["role"])

    @get("/me", summary="The authenticated caller")
    async def me(self, actor: ActorDep) -> Me:
        return Me(username=actor.username, user_id=actor.user_id, role=actor.role, via=actor.via)

    @get("/tokens", summary="API tokens (your own; every user's for an admin)")
    async def list_tokens(self, actor: ActorDep, gw: GatewayDep) -> list[TokenInfo]:
        rows = await gw.pool.fetch(
            """SELECT t.*, u.username FROM api_tokens t JOIN users u ON u.id = t.user_id
                WHERE ($1 OR t.user_id = $2) ORDER BY t.created_at""",
            actor.role == "admin",
            actor.user_id,
        )
        return [
            TokenInfo(
                id=r["id"],
                name=r["name"],
                role=r["role"],
                username=r["username"],
                created_at=r["created_at"].timestamp(),
                expires_at=_ts(r["expires_at"]),
                last_used_at=_ts(r["last_used_at"]),
                revoked=r["revoked_at"] is not None,
            )
            for r in rows
        ]

    @post("/tokens", summary="Create an API token (shown once)", responses=errors(403))
    async def create_token(self, data: JSONBody[TokenRequest], actor: ActorDep, gw: GatewayDep) -> NewToken:
        role = data.role or actor.role
        if LEVEL[role] > LEVEL[actor.role]:
            raise PermissionDeniedException(detail=f"a token cannot have more than your role ({actor.role})")
        tid, token, digest = new_api_token()
        note(target=tid, name=data.name, role=role)
        expires = dt.datetime.fromtimestamp(time.time() + data.expires_in_s, dt.UTC) if data.expires_in_s else None
        await gw.pool.execute(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, role, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            tid,
            actor.user_id,
            data.name,
            digest,
            role,
            expires,
        )
        return NewToken(id=tid, token=token, name=data.name, role=role, expires_at=_ts(expires))

    @delete("/tokens/{token_id:str}", summary="Revoke an API token", status_code=204)
    async def revoke_token(self, token_id: FromPath[str], actor: ActorDep, gw: GatewayDep) -> None:
        done = await gw.pool.fetchval(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL AND ($2 OR user_id = $3) RETURNING id",
            token_id,
            actor.role == "admin",
            actor.user_id,
        )
        if done is None:
            raise NotFoundException(detail="no such token")
        gw.auth._cache.clear()  # revocation takes effect at once on this replica
