"""The process backend: the commander supervises the program itself (Supervisor/PM2 semantics).

- argv without a shell, own session (so stop reaches the whole process group), optional user
  switch, stdout+stderr written by logtee to one log file per app (rotated by size), each line
  with its time and stream (launch.py).
- stop: SIGTERM to the group, SIGKILL after `stop_timeout_s`.
- A run shorter than `min_uptime_s` is a quick failure; after `max_retries` quick failures in a
  row the app is FATAL and stays down until started again. Otherwise the restart waits
  `backoff_s * 1.5^n` ±jitter, never above `backoff_max_s`, n reset after `backoff_reset_s` uptime.
- Children run in their own session and survive a commander restart; the next commander
  re-adopts them by PID + create time and keeps supervising them (exit codes of adopted
  processes are unknown: they are no longer our children).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import psutil

from libs.schemas import LogLine
from libs.schemas.control import AppInfo, LogLineOut

from . import launch, logfiles
from .errors import CtlError, conflict
from .exits import until_gone
from .procapp import ProcApp, restart_delay
from .store import AppRecord

log = logging.getLogger("commander.process")


class ProcessBackend:
    """The Backend (backend.py) of apps whose spec says backend="process"."""

    name = "process"
    adopts = True

    def __init__(
        self,
        logs_dir: Path,
        on_change: Callable[[ProcApp], None],
        persist: Callable[[], None],
        *,
        log_max_bytes: int,
        log_backups: int,
        jitter: float,
        backoff_reset_s: float,
        poll_interval_s: float,
    ) -> None:
        self.logs_dir = logs_dir
        self.on_change = on_change
        self.persist = persist
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.jitter = jitter
        self.backoff_reset_s = backoff_reset_s
        self.poll_interval_s = poll_interval_s
        self.apps: dict[str, ProcApp] = {}
        self._task: asyncio.Task | None = None
        self._rotate_at = 0.0

    # -- registry --------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def add(self, record: AppRecord, argv: list[str]) -> ProcApp:
        app = ProcApp(record, argv, self.log_path(record.spec.name))
        self.apps[record.spec.name] = app
        return app

    def adopt_or_boot(self, app: ProcApp, rebooted: bool) -> None:
        """After a commander (re)start: keep a still-running child, or start it again if it
        should run — after a machine reboot only when `start_on_boot` is set."""
        rec = app.record
        if rec.pid and rec.create_time:
            try:
                p = psutil.Process(rec.pid)
                if abs(p.create_time() - rec.create_time) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
                    app.proc = p
                    p.cpu_percent(None)
                    app.started_at = rec.create_time
                    self._set(app, "running", "re-adopted after commander restart")
                    return
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        rec.pid = None
        rec.create_time = None
        if rec.fatal:
            self._set(app, "fatal", "fatal before the commander restarted")
        elif rec.desired == "running" and (rec.spec.start_on_boot or not rebooted):
            self._spawn(app)
        elif rec.desired == "running":
            rec.desired = "stopped"
            self._set(app, "stopped", "not started after the reboot: start_on_boot is off")

    def adopt_running(self, app: ProcApp, pid: int) -> None:
        """Supervise a process started outside the commander (found by procs.scan)."""
        try:
            p = psutil.Process(pid)
            cmdline, status, created = p.cmdline(), p.status(), p.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            raise CtlError(404, f"no process {pid} to adopt") from None
        if status == psutil.STATUS_ZOMBIE:
            raise conflict(f"process {pid} is a zombie")
        if cmdline[: len(app.argv)] != app.argv and [os.path.basename(cmdline[0]), *cmdline[1:]] != [
            os.path.basename(app.argv[0]),
            *app.argv[1:],
        ]:
            raise CtlError(
                400,
                f"process {pid} runs {' '.join(cmdline)[:200]!r}, not the app's command {' '.join(app.argv)[:200]!r}",
            )
        app.proc = p
        p.cpu_percent(None)
        app.record.pid = pid
        app.record.create_time = created
        app.record.desired = "running"
        app.started_at = created
        self._set(app, "running", f"adopted running process {pid}")
        self.persist()

    # -- Backend --------------------------------------------------------------------------
    def _app(self, rec: AppRecord) -> ProcApp:
        app = self.apps.get(rec.spec.name)
        if app is None:
            raise conflict(f"app {rec.spec.name!r} is not valid any more (its program is missing); re-register it")
        return app

    def load(self, rec: AppRecord, argv: list[str], rebooted: bool) -> None:
        self.adopt_or_boot(self.add(rec, argv), rebooted)

    async def install(self, rec: AppRecord, argv: list[str]) -> None:
        self.add(rec, argv)

    async def adopt(self, rec: AppRecord, pid: int) -> None:
        self.adopt_running(self._app(rec), pid)

    async def remove(self, rec: AppRecord) -> None:
        app = self.apps.get(rec.spec.name)
        if app is not None and app.state in ("running", "starting", "backoff", "stopping"):
            app.record.desired = "stopped"
            if app.pid:
                await self._terminate(app)
        self.apps.pop(rec.spec.name, None)

    async def start(self, rec: AppRecord) -> None:
        await self._start(self._app(rec))

    async def stop(self, rec: AppRecord) -> None:
        await self._stop(self._app(rec))

    async def restart(self, rec: AppRecord) -> None:
        await self._restart(self._app(rec))

    async def info(self, rec: AppRecord, argv: list[str]) -> AppInfo:
        app = self.apps.get(rec.spec.name)
        if app is None:
            return AppInfo(spec=rec.spec, state="unknown", detail="not valid any more; re-register it")
        return self.describe(app)

    async def tail(self, name: str, n: int) -> list[LogLineOut]:
        return logfiles.tail_lines(self.log_path(name), n)

    def follow(self, name: str, interval_s: float) -> AsyncGenerator[list[LogLine], None]:
        return logfiles.follow(self.log_path(name), interval_s)

    def managed_pids(self) -> set[int]:
        return {a.pid for a in self.apps.values() if a.pid}

    # -- actions ---------------------------------------------------------------------------
    async def _start(self, app: ProcApp) -> None:
        if app.state in ("running", "starting"):
            raise conflict(f"app {app.spec.name!r} is already {app.state} (pid {app.pid})")
        app.record.desired = "running"
        app.record.fatal = False
        app.quick_failures = 0
        app.backoff_step = 0
        self._spawn(app)
        self.persist()

    async def _stop(self, app: ProcApp) -> None:
        if app.state in ("stopped", "fatal", "failed", "exited") and not self._alive(app):
            app.record.desired = "stopped"
            self.persist()
            raise conflict(f"app {app.spec.name!r} is not running ({app.state})")
        app.record.desired = "stopped"
        await self._terminate(app)
        self.persist()

    async def _restart(self, app: ProcApp) -> None:
        app.record.desired = "running"
        if self._alive(app):
            await self._terminate(app)
        app.record.fatal = False
        app.quick_failures = 0
        app.backoff_step = 0
        self._spawn(app)
        self.persist()

    def describe(self, app: ProcApp) -> AppInfo:
        cpu = rss = None
        if app.proc is not None and self._alive(app):
            try:
                with app.proc.oneshot():
                    cpu = app.proc.cpu_percent(None)
                    rss = app.proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return AppInfo(
            spec=app.spec,
            state=app.state,
            pid=app.pid if app.state in ("running", "starting", "stopping") else None,
            restarts=app.record.restarts,
            exit_code=app.exit_code,
            since=app.since,
            cpu_percent=cpu,
            rss=rss,
            detail=app.detail,
        )

    # -- supervision loop ------------------------------------------------------------------
    def start_loop(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="process-supervisor")

    async def stop_loop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("supervisor tick failed")
            await asyncio.sleep(self.poll_interval_s)

    def tick(self) -> None:
        now = time.monotonic()
        for app in list(self.apps.values()):
            if app.stopping:
                continue
            if app.state in ("starting", "running"):
                if not self._alive(app):
                    self._exited(app)
                elif app.state == "starting" and time.time() - app.started_at >= app.spec.min_uptime_s:
                    app.quick_failures = 0
                    self._set(app, "running")
                elif (
                    app.state == "running" and app.backoff_step and time.time() - app.started_at >= self.backoff_reset_s
                ):
                    app.backoff_step = 0
            elif app.state == "backoff" and now >= app.next_start_at:
                self._spawn(app)
        if now >= self._rotate_at:
            self._rotate_at = now + 5.0
            for app in self.apps.values():
                logfiles.rotate_if_needed(app.log_path, self.log_max_bytes, self.log_backups)

    def _alive(self, app: ProcApp) -> bool:
        if app.popen is not None:
            if app.popen.poll() is not None:
                app.exit_code = app.popen.returncode
                return False
            return True
        if app.proc is None:
            return False
        try:
            return app.proc.is_running() and app.proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _exited(self, app: ProcApp) -> None:
        spec = app.spec
        uptime = time.time() - app.started_at
        code = app.exit_code
        app.popen = None
        app.proc = None
        app.record.pid = None
        app.record.create_time = None
        quick = uptime < spec.min_uptime_s
        app.quick_failures = app.quick_failures + 1 if quick else 0
        restart = spec.restart == "always" or (spec.restart == "on-failure" and code != 0)
        how = (
            f"exited with code {code}"
            if code is not None and code >= 0
            else (f"killed by signal {-code}" if code is not None else "exited")
        )
        if not restart or app.record.desired != "running":
            app.record.desired = "stopped"
            self._set(app, "stopped" if code == 0 else "failed", how)
        elif app.quick_failures > spec.max_retries:
            app.record.fatal = True
            self._set(
                app,
                "fatal",
                f"{how}; {app.quick_failures} quick failures in a row (< {spec.min_uptime_s:g}s each), giving up",
            )
        else:
            delay = restart_delay(app.backoff_step, spec.backoff_s, spec.backoff_max_s, self.jitter)
            app.backoff_step += 1
            app.next_start_at = time.monotonic() + delay
            app.record.restarts += 1
            self._set(app, "backoff", f"{how}; restarting in {delay:.2f}s")
        self.persist()

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, app: ProcApp) -> None:
        try:
            app.popen = launch.spawn(app.argv, app.spec, app.log_path)
        except OSError as exc:
            app.popen = None
            app.record.desired = "stopped"
            self._set(app, "failed", f"could not start: {exc.strerror or exc}")
            return
        try:
            app.proc = psutil.Process(app.popen.pid)
            app.record.create_time = app.proc.create_time()
            app.proc.cpu_percent(None)
        except psutil.NoSuchProcess:
            app.proc = None
            app.record.create_time = None
        app.record.pid = app.popen.pid
        app.started_at = time.time()
        app.exit_code = None
        self._set(app, "starting", f"pid {app.popen.pid}")
        self.persist()

    def _signal(self, app: ProcApp, sig: int) -> None:
        pid = app.pid
        if not pid:
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    async def _terminate(self, app: ProcApp) -> None:
        app.stopping = True
        try:
            self._set(app, "stopping")
            self._signal(app, signal.SIGTERM)
            if not await until_gone(lambda: self._alive(app), app.spec.stop_timeout_s):
                self._signal(app, signal.SIGKILL)
                for _ in range(100):
                    if not self._alive(app):
                        break
                    await asyncio.sleep(0.05)
                app.detail = f"killed with SIGKILL after {app.spec.stop_timeout_s:g}s"
            else:
                app.detail = "stopped"
            app.popen = None
            app.proc = None
            app.record.pid = None
            app.record.create_time = None
            self._set(app, "stopped", app.detail)
        finally:
            app.stopping = False

    def _set(self, app: ProcApp, state: str, detail: str = "") -> None:
        if detail:
            app.detail = detail
        if state != app.state:
            app.state = state
            app.since = time.time()
        self.on_change(app)
