"""Admin CRUD on the central users table; each change is announced on fleet.users.changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody

from libs.schemas.events import UserOp

from ..auditing import note
from ..authn import ActorDep
from ..errors import errors
from ..roles import Role
from ..state import GatewayDep
from ..userstore import PUBLIC_COLUMNS, Conflict, UserOut, announce, create_user, update_user, user_out

Username = Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="POSIX login name")]
# At least 8 characters, not all of them blank (8 spaces is no password), and no NUL: crypt(3)
# cannot hash one (and pam_unix on the hosts could never match it). The lookahead keeps the
# check linear in the length.
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=1024,
        pattern=r"^(?=[^\x00]*$)\s*\S",
        description="8-1024 characters, not only whitespace, no NUL",
    ),
]
AbsPath = Annotated[str, msgspec.Meta(pattern=r"^/[^\x00\n:]*$", max_length=255)]
Email = Annotated[str, msgspec.Meta(pattern=r"^([^@\s\x00]+@[^@\s\x00]+)?$", max_length=254)]
Id = Annotated[int, msgspec.Meta(ge=1000, le=4_000_000_000 // 2)]


class UserCreate(msgspec.Struct, kw_only=True, frozen=True):
    username: Username
    password: Password | None = None  # none: the account cannot log in until one is set
    email: Email = ""
    role: Role = "viewer"
    shell: AbsPath = "/bin/bash"
    home: AbsPath | None = None
    system_uid: Id | None = None
    system_gid: Id | None = None
    is_active: bool = True


class UserUpdate(msgspec.Struct, kw_only=True, frozen=True):
    password: Password | None = None
    email: Email | None = None
    role: Role | None = None
    shell: AbsPath | None = None
    home: AbsPath | None = None
    is_active: bool | None = None


class UsersController(Controller):
    path = "/api/v1/users"
    tags = ["users"]

    @get("/", summary="Every user (no password hashes, ever)")
    async def list_users(self, gw: GatewayDep, active: FromQuery[bool | None] = None) -> list[UserOut]:
        rows = await gw.pool.fetch(
            f"SELECT {PUBLIC_COLUMNS} FROM users WHERE ($1::boolean IS NULL OR is_active = $1) ORDER BY username",
            active,
        )
        return [user_out(r) for r in rows]

    @post("/", summary="Create a user (uid/gid allocated when not given)", responses=errors(409))
    async def create(self, data: JSONBody[UserCreate], gw: GatewayDep, actor: ActorDep) -> UserOut:
        note(target=data.username, role=data.role)
        pw_hash = await gw.hasher.hash_async(data.password) if data.password else "!"
        try:
            row = await create_user(
                gw.pool,
                username=data.username,
                password_hash=pw_hash,
                role=data.role,
                email=data.email,
                shell=data.shell,
                home=data.home or "",
                system_uid=data.system_uid,
                system_gid=data.system_gid,
                is_active=data.is_active,
            )
        except (Conflict, asyncpg.UniqueViolationError) as exc:
            raise ClientException(
                status_code=409, detail=str(exc) if isinstance(exc, Conflict) else "username or uid is taken"
            ) from None
        await announce(gw.nc, "created", row["username"], row["id"])
        return user_out(row)

    @get("/{username:str}", summary="One user")
    async def get_user(self, username: FromPath[str], gw: GatewayDep) -> UserOut:
        row = await gw.pool.fetchrow(f"SELECT {PUBLIC_COLUMNS} FROM users WHERE username = $1", username)
        if row is None:
            raise NotFoundException(detail=f"no user {username!r}")
        return user_out(row)

    @patch("/{username:str}", summary="Change a user (password, role, shell, home, email, active)")
    async def update(
        self, username: FromPath[str], data: JSONBody[UserUpdate], gw: GatewayDep, actor: ActorDep
    ) -> UserOut:
        if username == actor.username and (
            data.is_active is False or (data.role is not None and data.role != actor.role)
        ):
            # An admin locking themselves out (possibly the last admin) is never what was meant.
            raise ClientException(detail="you cannot deactivate yourself or change your own role")
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None and k != "password"}
        # What changed, never the password itself: a reset is named, its value is not.
        note(**changes, **({"password": "(reset)"} if data.password is not None else {}))
        if data.password is not None:
            changes["password_hash"] = await gw.hasher.hash_async(data.password)
            # A reset ends every session opened with the old password (API tokens stay: they are
            # revoked one by one).
            changes["sessions_valid_after"] = datetime.now(UTC)
        if not changes:
            raise ClientException(detail="nothing to change")
        before = await gw.pool.fetchrow("SELECT id, is_active FROM users WHERE username = $1", username)
        if before is None:
            raise NotFoundException(detail=f"no user {username!r}")
        row = await update_user(gw.pool, username, changes)
        if row is None:
            raise NotFoundException(detail=f"no user {username!r}")
        gw.auth.forget_user(row["id"])
        op: UserOp
        if data.is_active is not None and data.is_active != before["is_active"]:
            op = "activated" if data.is_active else "deactivated"
        elif set(changes) == {"password_hash", "sessions_valid_after"}:
            op = "password"
        else:
            op = "updated"
        await announce(gw.nc, op, username, row["id"])
        return user_out(row)

    @delete("/{username:str}", summary="Deactivate a user (the row stays: uids are never reused)", status_code=200)
    async def deactivate(self, username: FromPath[str], gw: GatewayDep, actor: ActorDep) -> UserOut:
        if username == actor.username:
            raise ClientException(detail="you cannot deactivate yourself")
        row = await update_user(gw.pool, username, {"is_active": False})
        if row is None:
            raise NotFoundException(detail=f"no user {username!r}")
        gw.auth.forget_user(row["id"])
        await announce(gw.nc, "deactivated", username, row["id"])
        return user_out(row)
