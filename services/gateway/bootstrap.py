"""First start: create the `admin` user from a password file when no admin exists (`make run`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .userstore import Conflict, announce, create_user

log = logging.getLogger("fleetwatch.gateway")


def _read_password(p: Path) -> str | None:
    """The file's content, stripped; None when there is no such file."""
    if not p.is_file():
        return None
    return p.read_text().strip()


async def ensure_admin(gw) -> None:
    path = gw.config.admin_password_file
    if not path:
        return
    if await gw.pool.fetchval("SELECT 1 FROM users WHERE role = 'admin' AND is_active LIMIT 1"):
        return
    p = Path(path)
    password = await asyncio.to_thread(_read_password, p)  # file system access off the event loop
    if password is None:
        log.warning("admin password file not found; no admin created", extra={"file": str(p)})
        return
    if not password:
        log.warning("admin password file is empty; no admin created", extra={"file": str(p)})
        return
    try:
        row = await create_user(
            gw.pool, username="admin", password_hash=await gw.hasher.hash_async(password), role="admin"
        )
    except Conflict:
        # A user named admin exists without the admin role: leave it to a person to decide.
        log.warning("user admin exists but is not an active admin; not changed")
        return
    await announce(gw.nc, "created", "admin", row["id"])
    log.info("created the admin user", extra={"event": "admin_created"})
