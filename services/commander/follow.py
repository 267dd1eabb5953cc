"""apps.logs: the last lines of an app, and following it — the lines written from now on,
published in batches on fleet.logs.<host>.<app> while someone renews the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from libs.schemas import Codec, LogBatch, subjects
from libs.schemas.control import AppLogsRequest, LogsReply

from . import logfiles
from .backend import Backend
from .config import CommanderConfig
from .errors import bad

log = logging.getLogger("commander")
LOG_BATCH = Codec(LogBatch)
BATCH_LINES = 500  # lines per published batch: one message stays well within max_payload


class Follow:
    def __init__(self, app: str, until: float) -> None:
        self.app = app
        self.until = until  # the lease: following ends at this time unless renewed
        self.task: asyncio.Task | None = None


class LogFollows:
    def __init__(self, nc: Any, host: str, config: CommanderConfig) -> None:
        self.nc = nc
        self.host = host
        self.max_lease_s = config.follow_max_lease_s
        self.interval_s = config.follow_batch_interval_s
        self.follows: dict[str, Follow] = {}

    async def logs(self, backend: Backend, r: AppLogsRequest) -> LogsReply:
        if not 0 <= r.lines <= logfiles.MAX_TAIL:
            raise bad(f"lines must be between 0 and {logfiles.MAX_TAIL}")
        lines = await backend.tail(r.name, r.lines)
        subject, until = "", 0.0
        if r.follow:
            if not 0 < r.lease_s <= self.max_lease_s:
                raise bad(f"lease_s must be in (0, {self.max_lease_s:g}]")
            subject = subjects.logs(self.host, r.name)
            until = self._lease(backend, r.name, time.time() + r.lease_s).until
        return LogsReply(host=self.host, name=r.name, lines=lines, subject=subject, lease_until=until)

    def _lease(self, backend: Backend, name: str, until: float) -> Follow:
        f = self.follows.get(name)
        if f is not None and f.task and not f.task.done():
            f.until = max(f.until, until)  # renewal: whoever watches keeps it alive
            return f
        f = self.follows[name] = Follow(name, until)
        f.task = asyncio.create_task(self._follow(backend, f), name=f"follow-{name}")
        return f

    async def _follow(self, backend: Backend, f: Follow) -> None:
        subject = subjects.logs(self.host, f.app)
        seq = 0
        try:
            async with contextlib.aclosing(backend.follow(f.app, self.interval_s)) as batches:
                async for lines in batches:
                    for i in range(0, len(lines), BATCH_LINES):
                        seq += 1
                        batch = LogBatch(host=self.host, app=f.app, lines=lines[i : i + BATCH_LINES], seq=seq)
                        await self.nc.publish(subject, LOG_BATCH.encode(batch))
                    if time.time() >= f.until:
                        break
        except Exception:
            log.exception("log follow of %s failed", f.app)
        finally:
            if self.follows.get(f.app) is f:
                del self.follows[f.app]

    def cancel(self, name: str) -> None:
        f = self.follows.pop(name, None)
        if f and f.task:
            f.task.cancel()

    def tasks(self) -> list[asyncio.Task]:
        return [f.task for f in self.follows.values() if f.task]
