"""Applying ingest's migrations and reading back what they decided."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import asyncpg

from libs.runtime.db import migrate

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
COMPONENT = "ingest"


class Storage(NamedTuple):
    backend: str  # timescaledb | partitions
    raw_retention_s: float
    rollup_1m_retention_s: float
    rollup_1h_retention_s: float


async def apply(conn: asyncpg.Connection, storage: str = "auto") -> list[str]:
    # The first migration reads the wanted backend from this session setting.
    await conn.execute("SELECT set_config('fleetwatch.storage', $1, false)", storage)
    return await migrate(conn, COMPONENT, MIGRATIONS)


async def storage(conn: asyncpg.Connection) -> Storage:
    r = await conn.fetchrow(
        "SELECT backend, extract(epoch FROM raw_retention) AS raw, extract(epoch FROM rollup_1m_retention) AS r1m, "
        "extract(epoch FROM rollup_1h_retention) AS r1h FROM history_storage"
    )
    return Storage(r["backend"], float(r["raw"]), float(r["r1m"]), float(r["r1h"]))
