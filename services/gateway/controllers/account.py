"""Your own account: any signed-in user changes their own password, proving it with the current
one (an admin resets someone else's with PATCH /api/v1/users/{username}). The new password is
stored as a crypt(3) hash like every other, every session opened before it ends; the change is announced on fleet.users.changed
(op "password", no secret in it) so each host's replica picks it up."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller, post
from litestar.exceptions import ClientException, HTTPException, PermissionDeniedException
from litestar.params import JSONBody

from ..auditing import note
from ..authn import ActorDep
from ..errors import errors
from ..state import GatewayDep
from ..userstore import announce, update_user
from .auth import LoginResponse
from .users import Password


class PasswordChange(msgspec.Struct, kw_only=True, frozen=True):
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    new_password: Password


class AccountController(Controller):
    path = "/api/v1/auth/password"
    tags = ["auth"]

    @post(
        "/",
        summary="Change your own password (the current one is required); every other session ends, the answer is a new one",
        status_code=200,
        responses=errors(400, 403, 429),
    )
    async def change_password(self, data: JSONBody[PasswordChange], gw: GatewayDep, actor: ActorDep) -> LoginResponse:
        # A stolen session must not be able to guess its way to the password: failed checks are
        # limited like failed logins, per account.
        note(target=actor.username)
        key = f"password|{actor.user_id}"
        wait = gw.limiter.retry_after(key)
        if wait:
            raise HTTPException(
                status_code=429,
                detail="too many wrong current passwords; try again later",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        stored = await gw.pool.fetchval("SELECT password_hash FROM users WHERE id = $1", actor.user_id)
        if not await gw.hasher.verify_async(data.current_password, stored):
            gw.limiter.failed(key)
            raise PermissionDeniedException(detail="the current password is not right")
        gw.limiter.succeeded(key)
        if data.new_password == data.current_password:
            raise ClientException(detail="the new password must differ from the current one")
        # Every session opened before now ends (a thief's included); the caller gets a fresh one.
        now = time.time()
        changes = {
            "password_hash": await gw.hasher.hash_async(data.new_password),
            "sessions_valid_after": datetime.fromtimestamp(now, UTC),
        }
        row = await update_user(gw.pool, actor.username, changes)
        if row is None:  # removed between the check and the update
            raise PermissionDeniedException(detail="account not found")
        gw.auth.forget_user(actor.user_id)
        await announce(gw.nc, "password", actor.username, actor.user_id)
        # 1 ms after the cut-off: the stored instant is rounded to microseconds.
        token, exp = gw.signer.issue(actor.user_id, actor.username, gw.config.session_ttl_s, iat=now + 0.001)
        return LoginResponse(token=token, expires_at=exp, username=actor.username, role=row["role"])
