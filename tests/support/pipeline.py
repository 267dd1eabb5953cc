"""Helpers for the metric pipeline tests: ingest/collector subprocesses, waiting on the database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent.parent


def _env(**extra: str) -> dict[str, str]:
    from tests.conftest import service_env

    return service_env(**extra)


class Proc:
    """A service subprocess whose stderr goes to a file (read it when a test fails)."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], env=env, cwd=ROOT, stdout=self._out, stderr=self._out
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


def start_ingest(stack, dsn: str, log: Path, **extra: str) -> Proc:
    # The plain path unless a test asks for another (FLEETWATCH_INGEST_STORAGE="timescaledb").
    env = _env(**stack.env("ingest"), FLEETWATCH_DB_DSN=dsn, **{"FLEETWATCH_INGEST_STORAGE": "partitions", **extra})
    return Proc("services.ingest", env, log)


def start_collector(stack, host: str, log: Path, **extra: str) -> Proc:
    env = _env(**stack.env(host=host), **extra)
    return Proc("services.collector", env, log)


async def wait_until(
    check: Callable[[], Awaitable[object]], timeout: float, interval: float = 0.25, what: str = "condition"
):
    """Poll `check` until it returns something truthy; its last value on timeout is in the error."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def fetchval(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def table_exists(dsn: str, table: str) -> bool:
    try:
        return bool(await fetchval(dsn, "SELECT to_regclass($1) IS NOT NULL", table))
    except (OSError, asyncpg.PostgresError):
        return False


async def poll(dsn: str, sql: str, *args):
    """fetchval for polling: None while the table does not exist yet or the server is away."""
    try:
        return await fetchval(dsn, sql, *args)
    except (OSError, asyncpg.UndefinedTableError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
        return None
