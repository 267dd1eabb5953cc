"""The commander: NATS micro service `commander` with endpoints under fleet.ctl.<host>.

Each request is decoded (400 on a bad body, and the body dead-lettered), rate-limited when it
changes an app (429), validated (400/403), run by the app's backend, answered with a typed reply
or a micro error, and audited on fleet.audit.<host> whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats.micro
from nats.micro.request import Request

from libs.runtime import ServiceStats, StatsService, audit, deadletter, mask_mapping, open_nats
from libs.schemas import AppStatus, AuditRecord, Codec, DecodeError, LogBatch, LogLine, subjects
from libs.schemas.control import (
    AppInfo,
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
    LogLineOut,
    LogsReply,
    ScanReply,
    ScanRequest,
)

from . import logfiles, scan
from .config import CommanderConfig
from .errors import CtlError, bad, conflict, not_found
from .jobs import JobRunner
from .policy import RunAs
from .process_backend import ProcApp, ProcessBackend
from .ratelimit import RateLimiter
from .store import AppRecord, Store
from .systemd_backend import SystemdBackend

log = logging.getLogger("commander")
VERSION = "0.1.0"
_ENC = msgspec.json.Encoder()

# verb -> (request type, handler method name, target field, mutating?)
ENDPOINTS: dict[str, tuple[type, str, str, bool]] = {
    "apps.list": (AppListRequest, "apps_list", "", False),
    "apps.register": (AppRegisterRequest, "apps_register", "spec.name", True),
    "apps.remove": (AppRequest, "apps_remove", "name", True),
    "apps.start": (AppRequest, "apps_start", "name", True),
    "apps.stop": (AppRequest, "apps_stop", "name", True),
    "apps.restart": (AppRequest, "apps_restart", "name", True),
    "apps.status": (AppRequest, "apps_status", "name", False),
    "apps.logs": (AppLogsRequest, "apps_logs", "name", False),
    "jobs.run": (JobRunRequest, "jobs_run", "", True),
    "jobs.list": (JobListRequest, "jobs_list", "", False),
    "jobs.get": (JobRequest, "jobs_get", "id", False),
    "jobs.stop": (JobRequest, "jobs_stop", "id", True),
    "jobs.restart": (JobRequest, "jobs_restart", "id", True),
    "jobs.logs": (JobRequest, "jobs_logs", "id", False),
    "jobs.cleanup": (JobCleanupRequest, "jobs_cleanup", "", True),
    "procs.scan": (ScanRequest, "procs_scan", "", False),
}
CODECS: dict[str, Codec[Any]] = {verb: Codec(t) for verb, (t, *_rest) in ENDPOINTS.items()}
APP_STATUS = Codec(AppStatus)


def _target(req: Any, field: str) -> str:
    if not field:
        return ""
    obj = req
    for part in field.split("."):
        obj = getattr(obj, part, "")
    return str(obj) if obj else ""


class Follow:
    def __init__(self, app: str, until: float) -> None:
        self.app = app
        self.until = until
        self.task: asyncio.Task | None = None


class Commander:
    def __init__(self, config: CommanderConfig, nc, host: str) -> None:
        self.config = config
        self.nc = nc
        self.js = nc.jetstream()
        self.host = host
        self.store = Store(Path(config.state_dir))
        self.run_as = RunAs(config)  # who jobs and apps run as, and what an operator may run
        self.limiter = RateLimiter(config.rate_per_app_s)
        self.records: dict[str, AppRecord] = {}
        self.argv: dict[str, list[str]] = {}
        self.process = ProcessBackend(
            self.store.logs_dir(),
            self._on_process_change,
            self._persist,
            log_max_bytes=config.log_max_bytes,
            log_backups=config.log_backups,
            jitter=config.backoff_jitter,
            backoff_reset_s=config.backoff_reset_s,
            poll_interval_s=config.poll_interval_s,
        )
        self.systemd = SystemdBackend(
            config.unit_dir, config.unit_prefix, config.systemctl, config.journalctl, config.use_sudo
        )
        self.jobs = JobRunner(self.store.jobs_dir(), config.job_concurrency, config.job_max_timeout_s)
        self.follows: dict[str, Follow] = {}
        self.published: dict[str, tuple[str, int | None]] = {}
        self._status_q: asyncio.Queue[AppStatus] = asyncio.Queue(maxsize=10000)
        self._tasks: set[asyncio.Task] = set()
        self._bg: list[asyncio.Task] = []
        self.service: nats.micro.Service | None = None
        self._endpoints: dict[str, Any] = {}
        self.stats = ServiceStats()
        self.stats.queue("app_status", self._status_q.qsize)
        self.stats.gauge("apps", lambda: len(self.records))
        self.stats.gauge("log_follows", lambda: len(self.follows))
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
        try:
            self.records = self.store.load()
        except RuntimeError as exc:
            log.error("%s", exc)
            self.records = {}
        for name, rec in self.records.items():
            try:
                self.argv[name] = self.run_as.argv_of(rec)
            except CtlError as exc:
                log.error("registered app %s is no longer valid: %s", name, exc.message, extra={"app": name})
                self.argv[name] = []
                continue
            if rec.spec.backend == "process":
                self.process.adopt_or_boot(self.process.add(rec, self.argv[name]), self.store.rebooted)
        self._persist()
        self.process.start_loop()
        self._bg.append(asyncio.create_task(self._publisher(), name="status-publisher"))
        self._bg.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self.service = await self.micro.start()
        for verb in ENDPOINTS:
            await self.service.add_endpoint(
                name=verb.replace(".", "-"),
                subject=subjects.ctl(self.host, verb),
                handler=self._handler(verb),
                metadata={"verb": verb},
            )
        self._endpoints = {
            ep._metadata["verb"]: ep
            for ep in getattr(self.service, "_endpoints", [])
            if (getattr(ep, "_metadata", None) or {}).get("verb")
        }
        await self.nc.flush()

    async def stop(self) -> None:
        await self.micro.stop()
        for f in list(self.follows.values()):
            if f.task:
                f.task.cancel()
        await self.process.stop_loop()
        await self.jobs.close()
        for t in self._bg:
            t.cancel()
        for t in list(self._tasks) + self._bg:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        # Supervised children keep running: the next commander re-adopts them.
        self._persist()

    def _persist(self) -> None:
        self.store.save(self.records)

    # -- request plumbing ------------------------------------------------------------------
    def _handler(self, verb: str) -> Callable[[Request], Awaitable[None]]:
        async def handle(req: Request) -> None:
            # Answer from a task: a slow stop (SIGTERM grace) must not hold up other requests.
            t = asyncio.create_task(self._serve(verb, req))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

        return handle

    async def _serve(self, verb: str, req: Request) -> None:
        t0 = time.perf_counter()
        req_type, method, target_field, mutating = ENDPOINTS[verb]
        actor, target, params, source = "", "", {}, ""
        code, error, body = 200, "", b""
        try:
            try:
                r = CODECS[verb].decode(req.data)
            except DecodeError as exc:
                actor = self._guess_actor(req.data)
                self.stats.inc("dead_letters")
                await deadletter.send(self.nc, "commander", req.subject, req.data, exc)
                raise bad(f"malformed {verb} request: {exc.reason} (at {exc.path})") from None
            actor = r.actor
            source = r.source
            # a cleanup acts on the host's finished jobs, not one: the audit names that
            target = _target(r, target_field) or ("jobs" if verb == "jobs.cleanup" else "")
            params = {k: v for k, v in msgspec.to_builtins(r).items() if k not in ("actor", "v", "policy", "source")}
            if not actor:
                raise bad("actor is required: the user or automation on whose behalf this runs")
            if mutating and target:
                kind = "app" if verb.startswith("apps.") else "job"
                wait = self.limiter.allow(f"{kind}:{target}")
                if wait:
                    raise CtlError(
                        429,
                        f"{kind} {target!r} had an operation less than {self.config.rate_per_app_s:g}s ago; retry in {wait:.2f}s",
                    )
            reply = await getattr(self, method)(r)
            if isinstance(reply, JobReply) and not target:
                target = reply.job.id  # jobs.run: the audit names the job it created
            body = _ENC.encode(reply)
        except CtlError as exc:
            code, error = exc.code, exc.message
        except Exception as exc:  # a bug must answer 500, not leave the caller waiting
            log.exception("handler %s failed", verb)
            code, error = 500, f"internal error: {type(exc).__name__}"
        try:
            if code == 200:
                await req.respond(body)
            else:
                await req.respond_error(str(code), error)
        except Exception as exc:
            log.warning("could not answer %s: %s", verb, exc)
        duration = (time.perf_counter() - t0) * 1000
        self.stats.inc("messages_in")
        if code >= 500:
            self.stats.inc("errors")
        elif code != 200:
            self.stats.inc("refused")
        self._record_stats(verb, code, error, duration)
        if mutating:  # reads (lists, status, logs, scans) change nothing and are not audited
            await self._audit(verb, actor, target, params, code, error, duration, source)

    def _record_stats(self, verb: str, code: int, error: str, duration_ms: float) -> None:
        """Requests are answered from tasks, so the micro library's own timing and error counts
        would miss them; add them to its endpoint stats so $SRV.STATS tells the truth."""
        ep = self._endpoints.get(verb)
        if ep is None:
            return
        try:
            ep._processing_time += int(duration_ms * 1e6)
            if ep._num_requests:
                ep._average_processing_time = int(ep._processing_time / ep._num_requests)
            if code != 200:
                ep._num_errors += 1
                ep._last_error = f"{code}:{error}"
        except AttributeError:  # a nats-py without these internals: the stats stay as they are
            self._endpoints.pop(verb, None)

    @staticmethod
    def _guess_actor(data: bytes) -> str:
        try:
            obj = msgspec.json.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return ""
        a = obj.get("actor") if isinstance(obj, dict) else None
        return a[:200] if isinstance(a, str) else ""

    async def _audit(
        self, verb: str, actor: str, target: str, params: dict, code: int, error: str, duration_ms: float, source: str
    ) -> None:
        rec = AuditRecord(
            id=uuid.uuid4().hex,
            ts=time.time(),
            host=self.host,
            actor=actor or "unknown",
            action=verb,
            target=target,
            params=mask_mapping(params),
            result="ok" if code == 200 else "error",
            code=code,
            error=error,
            duration_ms=round(duration_ms, 3),
            # the door the gateway says the request came through; a direct NATS caller is "nats"
            source=source[:20] or "nats",
        )
        await audit.record(self.js, rec, self.stats)

    # -- app status publishing -------------------------------------------------------------
    def _on_process_change(self, app: ProcApp) -> None:
        self._queue_status(self.process.info(app))

    def _queue_status(self, info: AppInfo) -> None:
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
            self._status_q.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("app status queue full; dropping a status of %s", info.spec.name)

    async def _publisher(self) -> None:
        while True:
            msg = await self._status_q.get()
            try:
                await self.nc.publish(subjects.apps(self.host), APP_STATUS.encode(msg))
                self.stats.inc("messages_out")
            except Exception as exc:
                self.stats.inc("errors")
                log.warning("could not publish app status: %s", exc)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_interval_s)
            await self.reconcile()

    async def reconcile(self) -> None:
        for name, rec in list(self.records.items()):
            try:
                self._queue_status(await self._info(rec))
            except CtlError as exc:
                log.warning("reconcile %s: %s", name, exc.message)
            except Exception:
                log.exception("reconcile %s failed", name)

    # -- apps ------------------------------------------------------------------------------
    def _record(self, name: str) -> AppRecord:
        rec = self.records.get(name)
        if rec is None:
            raise not_found(f"no app named {name!r} on host {self.host}")
        return rec

    async def _info(self, rec: AppRecord) -> AppInfo:
        info = await self._raw_info(rec)
        if info.spec.env:  # replies and events never carry secret values
            info = msgspec.structs.replace(
                info, spec=msgspec.structs.replace(info.spec, env=mask_mapping(dict(info.spec.env)))
            )
        return info

    async def _raw_info(self, rec: AppRecord) -> AppInfo:
        if rec.spec.backend == "process":
            app = self.process.apps.get(rec.spec.name)
            if app is None:
                return AppInfo(spec=rec.spec, state="unknown", detail="not valid any more; re-register it")
            return self.process.info(app)
        return await self.systemd.info(rec, self.argv.get(rec.spec.name, []))

    def _proc_app(self, rec: AppRecord) -> ProcApp:
        app = self.process.apps.get(rec.spec.name)
        if app is None:
            raise conflict(f"app {rec.spec.name!r} is not valid any more (its program is missing); re-register it")
        return app

    async def apps_list(self, r: AppListRequest) -> AppListReply:
        return AppListReply(host=self.host, apps=[await self._info(rec) for rec in self.records.values()])

    async def apps_register(self, r: AppRegisterRequest) -> AppReply:
        spec, argv = self.run_as.app(r.role, r.policy, r.spec, r.adopt_pid)
        if r.adopt_pid is not None and spec.backend != "process":
            raise bad("adopt_pid works with the process backend only (systemd owns its units' processes)")
        old = self.records.get(spec.name)
        if old is not None:
            if not r.replace:
                raise conflict(f"an app named {spec.name!r} is already registered; pass replace=true to change it")
            await self._teardown(old)
        rec = AppRecord(spec=spec, desired="stopped")
        if spec.backend == "systemd":
            await self.systemd.install(spec, argv)
        self.records[spec.name] = rec
        self.argv[spec.name] = argv
        if spec.backend == "process":
            self.process.add(rec, argv)
        self._persist()
        if r.adopt_pid is not None:
            try:
                self.process.adopt_running(self.process.apps[spec.name], r.adopt_pid)
            except CtlError:
                self.process.remove(spec.name)
                del self.records[spec.name]
                self._persist()
                raise
        elif r.start:
            await self._start(rec)
        info = await self._info(rec)
        self._queue_status(info)
        return AppReply(app=info)

    async def _teardown(self, rec: AppRecord) -> None:
        name = rec.spec.name
        if rec.spec.backend == "process":
            app = self.process.apps.get(name)
            if app is not None and app.state in ("running", "starting", "backoff", "stopping"):
                app.record.desired = "stopped"
                if app.pid:
                    await self.process._terminate(app)
            self.process.remove(name)
        else:
            await self.systemd.uninstall(name)
        f = self.follows.pop(name, None)
        if f and f.task:
            f.task.cancel()

    async def apps_remove(self, r: AppRequest) -> AppReply:
        rec = self._record(r.name)
        await self._teardown(rec)
        del self.records[r.name]
        self.argv.pop(r.name, None)
        self.published.pop(r.name, None)
        self._persist()
        return AppReply(app=AppInfo(spec=rec.spec, state="removed"))

    async def _start(self, rec: AppRecord) -> None:
        if rec.spec.backend == "process":
            await self.process.start(self._proc_app(rec))
        else:
            await self.systemd.start(rec)
            self._persist()

    async def apps_start(self, r: AppRequest) -> AppReply:
        rec = self._record(r.name)
        await self._start(rec)
        return await self._reply(rec)

    async def apps_stop(self, r: AppRequest) -> AppReply:
        rec = self._record(r.name)
        if rec.spec.backend == "process":
            await self.process.stop(self._proc_app(rec))
        else:
            await self.systemd.stop(rec)
            self._persist()
        return await self._reply(rec)

    async def apps_restart(self, r: AppRequest) -> AppReply:
        rec = self._record(r.name)
        if rec.spec.backend == "process":
            await self.process.restart(self._proc_app(rec))
        else:
            await self.systemd.restart(rec)
            self._persist()
        return await self._reply(rec)

    async def _reply(self, rec: AppRecord) -> AppReply:
        info = await self._info(rec)
        self._queue_status(info)
        return AppReply(app=info)

    async def apps_status(self, r: AppRequest) -> AppReply:
        return AppReply(app=await self._info(self._record(r.name)))

    # -- logs ------------------------------------------------------------------------------
    async def apps_logs(self, r: AppLogsRequest) -> LogsReply:
        rec = self._record(r.name)
        if not 0 <= r.lines <= logfiles.MAX_TAIL:
            raise bad(f"lines must be between 0 and {logfiles.MAX_TAIL}")
        if rec.spec.backend == "process":
            now = time.time()
            lines = [LogLineOut(ts=now, line=line) for line in logfiles.tail(self.process.log_path(r.name), r.lines)]
        else:
            lines = (
                [
                    LogLineOut(ts=ts, line=msg, level=level)
                    for ts, msg, level in await self.systemd.tail(r.name, r.lines)
                ]
                if r.lines
                else []
            )
        subject, until = "", 0.0
        if r.follow:
            if not 0 < r.lease_s <= self.config.follow_max_lease_s:
                raise bad(f"lease_s must be in (0, {self.config.follow_max_lease_s:g}]")
            until = time.time() + r.lease_s
            subject = subjects.logs(self.host, r.name)
            f = self.follows.get(r.name)
            if f is not None and f.task and not f.task.done():
                f.until = max(f.until, until)  # renewal: whoever watches keeps it alive
            else:
                f = self.follows[r.name] = Follow(r.name, until)
                f.task = asyncio.create_task(self._follow(rec, f), name=f"follow-{r.name}")
            until = f.until
        return LogsReply(host=self.host, name=r.name, lines=lines, subject=subject, lease_until=until)

    async def _follow(self, rec: AppRecord, f: Follow) -> None:
        subject = subjects.logs(self.host, rec.spec.name)
        codec = Codec(LogBatch)
        seq = 0

        async def send(lines: list[LogLine]) -> None:
            nonlocal seq
            for i in range(0, len(lines), 500):
                seq += 1
                await self.nc.publish(
                    subject,
                    codec.encode(LogBatch(host=self.host, app=rec.spec.name, lines=lines[i : i + 500], seq=seq)),
                )

        try:
            if rec.spec.backend == "process":
                follower = logfiles.Follower(self.process.log_path(rec.spec.name))
                while time.time() < f.until:
                    new = follower.read_new()
                    if new:
                        now = time.time()
                        await send([LogLine(ts=now, line=x) for x in new])
                    await asyncio.sleep(self.config.follow_batch_interval_s)
            else:
                proc = await self.systemd.follow_process(rec.spec.name, since=time.time())
                try:
                    assert proc.stdout is not None  # follow_process asks for a pipe; typeshed cannot tell
                    buf: list[LogLine] = []
                    last = time.monotonic()
                    while time.time() < f.until:
                        try:
                            raw = await asyncio.wait_for(proc.stdout.readline(), self.config.follow_batch_interval_s)
                        except TimeoutError:
                            raw = None
                        if raw == b"":
                            break
                        if raw:
                            e = self.systemd.parse_journal(raw.decode("utf-8", "replace"))
                            if e:
                                buf.append(LogLine(ts=e[0], line=e[1], level=e[2], stream="journal"))
                        if buf and (time.monotonic() - last >= self.config.follow_batch_interval_s or len(buf) >= 500):
                            await send(buf)
                            buf, last = [], time.monotonic()
                    if buf:
                        await send(buf)
                finally:
                    if proc.returncode is None:
                        proc.kill()
                    await proc.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("log follow of %s failed", rec.spec.name)
        finally:
            if self.follows.get(rec.spec.name) is f:
                del self.follows[rec.spec.name]

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
        managed = {a.pid for a in self.process.apps.values() if a.pid}
        managed |= {pid for pid, _ in self.systemd.last_pid.values()}
        procs = await asyncio.to_thread(scan.scan, managed, {os.getpid()})
        return ScanReply(host=self.host, procs=procs)


async def build(config: CommanderConfig, stack: contextlib.AsyncExitStack) -> Commander:
    host = config.host.host_id
    nc = await open_nats(stack, config.nats, f"commander-{host}")
    return Commander(config, nc, host)
