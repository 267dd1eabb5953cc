"""App status events on fleet.apps.<host>: one when an app's state or PID changes, published
from a queue so a supervision tick or a handler never waits on NATS."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from libs.runtime import ServiceStats
from libs.schemas import AppStatus, Codec, subjects
from libs.schemas.control import AppInfo

log = logging.getLogger("commander")
APP_STATUS = Codec(AppStatus)


class StatusPublisher:
    def __init__(self, nc: Any, host: str, stats: ServiceStats) -> None:
        self.nc = nc
        self.host = host
        self.stats = stats
        self.published: dict[str, tuple[str, int | None]] = {}  # app -> (state, pid) last queued
        self.queue: asyncio.Queue[AppStatus] = asyncio.Queue(maxsize=10000)
        stats.queue("app_status", self.queue.qsize)

    def changed(self, info: AppInfo) -> None:
        """Queue an event when `info` differs (state or PID) from the app's last one."""
        key = (info.state, info.pid)
        if self.published.get(info.spec.name) == key:
            return
        previous = self.published.get(info.spec.name, ("", None))[0] or None
        self.published[info.spec.name] = key
        msg = AppStatus(
            host=self.host,
            app=info.spec.name,
            state=info.state,  # type: ignore[arg-type]
            ts=time.time(),
            backend=info.spec.backend,
            pid=info.pid,
            previous=previous,
            restarts=info.restarts,
            exit_code=info.exit_code,
            cpu_percent=info.cpu_percent,
            rss=info.rss,
            detail=info.detail,
        )
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("app status queue full; dropping a status of %s", info.spec.name)

    def forget(self, name: str) -> None:
        self.published.pop(name, None)

    async def run(self) -> None:
        while True:
            msg = await self.queue.get()
            try:
                await self.nc.publish(subjects.apps(self.host), APP_STATUS.encode(msg))
                self.stats.inc("messages_out")
            except Exception as exc:
                self.stats.inc("errors")
                log.warning("could not publish app status: %s", exc)
