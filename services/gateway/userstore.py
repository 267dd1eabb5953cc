"""The central users table: create (uid/gid allocated without collisions), update, deactivate,
and announce each change on fleet.users.changed. Hashes never leave this module's queries
except into the table."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from libs.schemas import Codec, UserChange
from libs.schemas import subjects as s
from libs.schemas.events import UserOp

UID_MIN = 2000
_change_codec = Codec(UserChange)
# Serialises uid allocation across gateway replicas (transaction-scoped advisory lock).
_UID_LOCK = 0x666C_7477_7569_64  # "fltwuid"

PUBLIC_COLUMNS = (
    "id, username, email, role, is_admin, is_active, system_uid, system_gid, shell, home, created_at, updated_at"
)


class UserOut(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    username: str
    email: str
    role: str
    is_admin: bool
    is_active: bool
    system_uid: int
    system_gid: int
    shell: str
    home: str
    created_at: float
    updated_at: float


def user_out(row: asyncpg.Record) -> UserOut:
    return UserOut(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        role=row["role"],
        is_admin=row["is_admin"],
        is_active=row["is_active"],
        system_uid=row["system_uid"],
        system_gid=row["system_gid"],
        shell=row["shell"],
        home=row["home"],
        created_at=row["created_at"].timestamp(),
        updated_at=row["updated_at"].timestamp(),
    )


class Conflict(Exception):
    pass


async def announce(nc, op: UserOp, username: str, user_id: int | None) -> None:
    await nc.publish(
        s.USERS_CHANGED, _change_codec.encode(UserChange(ts=time.time(), op=op, username=username, user_id=user_id))
    )


async def create_user(
    pool: asyncpg.Pool,
    *,
    username: str,
    password_hash: str,
    role: str,
    email: str = "",
    shell: str = "/bin/bash",
    home: str = "",
    system_uid: int | None = None,
    system_gid: int | None = None,
    is_active: bool = True,
) -> asyncpg.Record:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _UID_LOCK)
        if await conn.fetchval("SELECT 1 FROM users WHERE username=$1", username):
            raise Conflict(f"user {username!r} exists")
        if system_uid is None:
            system_uid = await conn.fetchval(
                # The lowest free uid at or above UID_MIN that is not a gid of someone else either,
                # so the user's private group (gid = uid) never collides.
                """SELECT min(c) FROM (
                       SELECT $1::int AS c
                       UNION ALL SELECT system_uid + 1 FROM users
                       UNION ALL SELECT system_gid + 1 FROM users) cand
                    WHERE c >= $1
                      AND NOT EXISTS (SELECT 1 FROM users u WHERE u.system_uid = c OR u.system_gid = c)""",
                UID_MIN,
            )
        elif await conn.fetchval("SELECT 1 FROM users WHERE system_uid=$1", system_uid):
            raise Conflict(f"uid {system_uid} is taken")
        if system_gid is None:
            system_gid = system_uid
        return await conn.fetchrow(
            f"""INSERT INTO users (username, email, password_hash, role, is_admin, is_active, system_uid, system_gid, shell, home)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {PUBLIC_COLUMNS}""",
            username,
            email,
            password_hash,
            role,
            role == "admin",
            is_active,
            system_uid,
            system_gid,
            shell,
            home or f"/home/{username}",
        )


async def update_user(pool: asyncpg.Pool, username: str, changes: dict[str, Any]) -> asyncpg.Record | None:
    if "role" in changes:
        changes["is_admin"] = changes["role"] == "admin"
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=2))
    sql = f"UPDATE users SET {sets}, updated_at = now() WHERE username = $1 RETURNING {PUBLIC_COLUMNS}"
    return await pool.fetchrow(sql, username, *changes.values())
