"""The commander: NATS micro service `commander` with endpoints under fleet.ctl.<host>.

This module puts the parts together and runs them: the request plumbing (endpoints.py), the app
operations (apps.py) on their backends (process_backend.py, systemd_backend.py), log following
(follow.py), app status events (status.py), jobs (jobs.py) and the process scan (scan.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from libs.runtime import ServiceStats, StatsService, open_nats
from libs.schemas.control import (
    AppListReply,
    AppListRequest,
    AppLogsRequest,
    AppRegisterRequest,
    AppReply,
    AppRequest,
    JobCleanupReply,
    JobCleanupRequest,
    JobListReply,
    JobListRequest,
    JobLogsReply,
    JobReply,
    JobRequest,
    JobRunRequest,
    LogsReply,
    ScanReply,
    ScanRequest,
)

from . import logfiles, scan
from .apps import Apps
from .backend import Backend
from .config import CommanderConfig
from .endpoints import CODECS, ENDPOINTS, Endpoints
from .errors import bad
from .follow import LogFollows
from .jobs import JobRunner
from .policy import RunAs
from .procapp import ProcApp
from .process_backend import ProcessBackend
from .status import StatusPublisher
from .store import Store
from .systemd_backend import SystemdBackend

__all__ = ["CODECS", "ENDPOINTS", "Commander", "build"]

log = logging.getLogger("commander")
VERSION = "0.1.0"
STOP_WAIT_S = 5.0  # how long stop() waits for each request, follow and loop to end


async def settle(tasks: Iterable[asyncio.Task], timeout_s: float, cancel: bool = False) -> None:
    """Wait (together) for `tasks` to end, each at most `timeout_s`; with `cancel`, cancel them
    first. Their outcomes are dropped: this is for shutting down."""

    async def one(t: asyncio.Task) -> None:
        if cancel:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(t, timeout_s)

    async with asyncio.TaskGroup() as tg:
        for t in list(tasks):
            tg.create_task(one(t))


class Commander:
    def __init__(self, config: CommanderConfig, nc, host: str) -> None:
        self.config = config
        self.nc = nc
        self.host = host
        self.stats = ServiceStats()
        self.store = Store(Path(config.state_dir))
        self.run_as = RunAs(config)  # who jobs and apps run as, and what an operator may run
        self.status = StatusPublisher(nc, host, self.stats)
        self.process = ProcessBackend(
            self.store.logs_dir(),
            self._on_process_change,
            lambda: self.apps.persist(),
            log_max_bytes=config.log_max_bytes,
            log_backups=config.log_backups,
            jitter=config.backoff_jitter,
            backoff_reset_s=config.backoff_reset_s,
            poll_interval_s=config.poll_interval_s,
        )
        self.systemd = SystemdBackend(
            config.unit_dir, config.unit_prefix, config.systemctl, config.journalctl, config.use_sudo
        )
        backends: dict[str, Backend] = {self.process.name: self.process, self.systemd.name: self.systemd}
        self.follows = LogFollows(nc, host, config)
        self.apps = Apps(host, self.store, self.run_as, backends, self.status, self.follows)
        self.jobs = JobRunner(self.store.jobs_dir(), config.job_concurrency, config.job_max_timeout_s)
        self.endpoints = Endpoints(self, nc, host, self.stats, config.rate_per_app_s)
        self._bg: list[asyncio.Task] = []
        self.stats.gauge("apps", lambda: len(self.apps.records))
        self.stats.gauge("log_follows", lambda: len(self.follows.follows))
        self.micro = StatsService(
            nc,
            "commander",
            self.stats,
            host=host,
            version=VERSION,
            description=f"fleetwatch control of host {host}: apps, jobs, logs, scan",
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.apps.load()
        self.process.start_loop()
        self._bg.append(asyncio.create_task(self.status.run(), name="status-publisher"))
        self._bg.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        await self.endpoints.add_to(await self.micro.start())
        await self.nc.flush()

    async def stop(self) -> None:
        await self.micro.stop()
        await settle(self.follows.tasks(), STOP_WAIT_S, cancel=True)
        await self.process.stop_loop()
        await self.jobs.close()
        await settle(self._bg, STOP_WAIT_S, cancel=True)
        await settle(self.endpoints.tasks, STOP_WAIT_S)  # requests in flight may finish
        # Supervised children keep running: the next commander re-adopts them.
        self.apps.persist()

    def _on_process_change(self, app: ProcApp) -> None:
        self.status.changed(self.process.describe(app))

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_interval_s)
            await self.apps.reconcile()

    # -- apps ------------------------------------------------------------------------------
    async def apps_list(self, r: AppListRequest) -> AppListReply:
        return await self.apps.list(r)

    async def apps_register(self, r: AppRegisterRequest) -> AppReply:
        return await self.apps.register(r)

    async def apps_remove(self, r: AppRequest) -> AppReply:
        return await self.apps.remove(r)

    async def apps_start(self, r: AppRequest) -> AppReply:
        return await self.apps.start(r)

    async def apps_stop(self, r: AppRequest) -> AppReply:
        return await self.apps.stop(r)

    async def apps_restart(self, r: AppRequest) -> AppReply:
        return await self.apps.restart(r)

    async def apps_status(self, r: AppRequest) -> AppReply:
        return await self.apps.status_of(r)

    async def apps_logs(self, r: AppLogsRequest) -> LogsReply:
        return await self.follows.logs(self.apps.backend(self.apps.record(r.name)), r)

    # -- jobs ------------------------------------------------------------------------------
    async def jobs_run(self, r: JobRunRequest) -> JobReply:
        argv, user = self.run_as.job(r.role, r.policy, r.argv, r.cwd, r.user, r.env)
        return JobReply(job=await self.jobs.run(argv, list(r.argv), r.cwd, user, dict(r.env), r.timeout_s, r.actor))

    async def jobs_list(self, r: JobListRequest) -> JobListReply:
        return JobListReply(host=self.host, jobs=self.jobs.recent(r.limit, self.nc.max_payload // 2))

    async def jobs_get(self, r: JobRequest) -> JobReply:
        return JobReply(job=self.jobs.get(r.id).info)

    async def jobs_stop(self, r: JobRequest) -> JobReply:
        return JobReply(job=await self.jobs.stop(r.id))

    async def jobs_restart(self, r: JobRequest) -> JobReply:
        return JobReply(job=await self.jobs.restart(r.id, r.actor, lambda *a: self.run_as.job(r.role, r.policy, *a)))

    async def jobs_logs(self, r: JobRequest) -> JobLogsReply:
        if not 0 <= r.lines <= logfiles.MAX_TAIL:
            raise bad(f"lines must be between 0 and {logfiles.MAX_TAIL}")
        return JobLogsReply(id=r.id, lines=self.jobs.logs(r.id, r.lines))

    async def jobs_cleanup(self, r: JobCleanupRequest) -> JobCleanupReply:
        if r.older_than_s < 0:
            raise bad("older_than_s must be >= 0")
        return JobCleanupReply(removed=self.jobs.cleanup(r.older_than_s))

    # -- scan ------------------------------------------------------------------------------
    async def procs_scan(self, r: ScanRequest) -> ScanReply:
        managed = self.process.managed_pids() | self.systemd.managed_pids()
        procs = await asyncio.to_thread(scan.scan, managed, {os.getpid()})
        return ScanReply(host=self.host, procs=procs)


async def build(config: CommanderConfig, stack: contextlib.AsyncExitStack) -> Commander:
    host = config.host.host_id
    nc = await open_nats(stack, config.nats, f"commander-{host}")
    return Commander(config, nc, host)
