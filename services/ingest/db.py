"""One PostgreSQL connection per writer, re-opened after an outage, with its staging tables."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger("fleetwatch.ingest.db")

# Staging tables: COPY lands here, then INSERT ... ON CONFLICT DO NOTHING moves the rows, so a
# redelivered message never creates a duplicate. Temporary and emptied at each commit.
STAGED = (
    "metrics", "metrics_disk", "metrics_gpu", "proc_samples",
    "app_events", "health_results", "alert_events", "audit_log", "replica_status",
)  # fmt: skip

# Errors that say "this data cannot be stored" (the batch is split to find the culprit) as
# opposed to "the database is away or busy" (the batch is retried as is).
DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    ValueError,
    TypeError,
    OverflowError,
)


def is_data_error(exc: BaseException) -> bool:
    # asyncpg's client-side encoding errors subclass these too; a closed connection does not.
    return isinstance(exc, DATA_ERRORS) and not isinstance(
        exc, (asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
    )


class Link:
    """A lazily (re)connected connection; `reset()` after any error that may have broken it."""

    def __init__(self, dsn: str, name: str) -> None:
        self.dsn = dsn
        self.name = name
        self.conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self.conn is not None and not self.conn.is_closed():
            return self.conn
        conn = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": f"fleetwatch-ingest-{self.name}"}
        )
        try:
            for t in STAGED:
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS _s_{t} (LIKE {t} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
        except BaseException:
            await conn.close()
            raise
        self.conn = conn
        return conn

    async def reset(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except Exception:
                conn.terminate()

    async def close(self) -> None:
        await self.reset()
