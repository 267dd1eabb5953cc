"""PostgreSQL access every DB-owning service shares: a pool that waits for the server, and
versioned migrations applied under an advisory lock (several replicas may start at once)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import time
from pathlib import Path

import asyncpg

from .settings import DbSettings

log = logging.getLogger("fleetwatch.db")


async def create_pool(settings: DbSettings, *, wait: float = 120.0, **kwargs) -> asyncpg.Pool:
    """Open a pool, retrying while the server is not up yet (services may start before it)."""
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            return await asyncpg.create_pool(
                settings.dsn, min_size=settings.pool_min, max_size=settings.pool_max, **kwargs
            )
        except (TimeoutError, OSError, asyncpg.CannotConnectNowError, asyncpg.InvalidCatalogNameError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def open_pool(stack: contextlib.AsyncExitStack, settings: DbSettings, **kwargs) -> asyncpg.Pool:
    pool = await create_pool(settings, **kwargs)
    stack.push_async_callback(pool.close)
    return pool


def _migration_files(directory: Path) -> list[Path]:
    """The `NNNN_name.sql` / `NNNN_name.py` files of `directory`, in version order."""
    return sorted(p for p in Path(directory).iterdir() if p.suffix in (".sql", ".py") and p.name[:4].isdigit())


def _lock_key(component: str) -> int:
    return int.from_bytes(hashlib.sha1(f"fleetwatch-migrate:{component}".encode()).digest()[:8], "big", signed=True)


async def migrate(pool_or_conn, component: str, directory: Path) -> list[str]:
    """Apply `NNNN_name.sql` / `NNNN_name.py` files of `directory` not yet applied for `component`.

    A `.py` migration defines `async def up(conn) -> None`, for steps that decide at run time
    (TimescaleDB present or not). Each migration runs in its own transaction.
    """
    applied_now: list[str] = []
    acquire = pool_or_conn.acquire() if isinstance(pool_or_conn, asyncpg.Pool) else contextlib.nullcontext(pool_or_conn)
    async with acquire as conn:
        key = _lock_key(component)
        await conn.execute("SELECT pg_advisory_lock($1)", key)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       component text NOT NULL,
                       version integer NOT NULL,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (component, version))"""
            )
            done = {
                r["version"]
                for r in await conn.fetch("SELECT version FROM schema_migrations WHERE component=$1", component)
            }
            files = await asyncio.to_thread(_migration_files, directory)
            for f in files:
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                async with conn.transaction():
                    if f.suffix == ".sql":
                        await conn.execute(await asyncio.to_thread(f.read_text))
                    else:
                        spec = importlib.util.spec_from_file_location(f"_migration_{component}_{version}", f)
                        if spec is None or spec.loader is None:  # only for a suffix no loader knows
                            raise RuntimeError(f"cannot load migration {f}")
                        mod = importlib.util.module_from_spec(spec)
                        spec.loader.exec_module(mod)
                        await mod.up(conn)
                    await conn.execute(
                        "INSERT INTO schema_migrations(component, version, name) VALUES ($1, $2, $3)",
                        component,
                        version,
                        f.stem,
                    )
                log.info("applied migration", extra={"component": component, "migration": f.name})
                applied_now.append(f.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
    return applied_now
