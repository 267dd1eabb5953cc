"""The replicator service: when to sync (start, schedule, fleet.users.changed, manual request,
retry after a failure) and what to say about it (ReplicationStatus on fleet.replica.<host>)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import time
import uuid
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from libs.runtime import DbSettings, ServiceStats, audit, deadletter, open_nats, open_stats
from libs.runtime.db import migrate, open_pool
from libs.runtime.logs import redact
from libs.schemas import AuditRecord, Codec, DecodeError, ReplicationStatus, UserChange, subjects
from libs.schemas.replication import SyncRequest

from . import apply as applier
from .config import ReplicatorConfig
from .source import LocalAccounts, fetch_active_users

log = logging.getLogger("replicator")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
STATUS = Codec(ReplicationStatus)
USER_CHANGE = Codec(UserChange)
SYNC_REQUEST = Codec(SyncRequest)

# When several triggers are pending, the status reports the most deliberate one.
_PRIORITY = {"manual": 4, "event": 3, "start": 2, "retry": 1, "schedule": 0}
# Anything shaped like a crypt(3) hash ($id$...): driver errors can quote a failing row.
_HASHLIKE = re.compile(r"\$[A-Za-z0-9]{1,6}\$[^\s'\"(),]+")
MAX_SKIPPED = 50  # skipped users named in a status or log line


def skipped_list(skipped: list[tuple[str, str]]) -> list[str]:
    out = [f"{name}: {why}" for name, why in skipped[:MAX_SKIPPED]]
    if len(skipped) > MAX_SKIPPED:
        out.append(f"+{len(skipped) - MAX_SKIPPED} more")
    return out


def describe(exc: BaseException) -> str:
    """An error for logs and events: type and message, hashes and known secrets masked."""
    text = str(exc).strip()
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact(_HASHLIKE.sub("***", text))[:500]


class ReplicatorService:
    def __init__(self, config: ReplicatorConfig, nc, local_pool, host: str) -> None:
        self.config = config
        self.nc = nc
        self.pool = local_pool
        self.host = host
        self.last_status: ReplicationStatus | None = None
        self.failures = 0
        self.stats = ServiceStats()
        self.stats.gauge("consecutive_failures", lambda: self.failures)
        self.stats.gauge("users", lambda: self.last_status.total if self.last_status and self.last_status.ok else None)
        self._pending: str | None = None
        self._due = 0.0
        self._waiters: list[asyncio.Future] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._subs: list = []
        self._tasks: set[asyncio.Task] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._cache = applier.LocalCache()

    # -- triggers -------------------------------------------------------------------------------

    def trigger(self, kind: str) -> None:
        """Ask for a sync. Events are debounced (a burst is one sync, at most `debounce` late);
        everything else runs as soon as the worker is free."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now + self.config.debounce if kind == "event" else now
        if self._pending is None:
            self._pending, self._due = kind, due
        else:
            if _PRIORITY.get(kind, 0) > _PRIORITY.get(self._pending, 0):
                self._pending = kind
            self._due = min(self._due, due)
        self._wake.set()

    def request(self, kind: str = "manual") -> asyncio.Future:
        """A future resolved with the status of a sync that starts after this call."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.trigger(kind)
        return fut

    async def _on_users_changed(self, msg) -> None:
        self.stats.inc("messages_in")
        try:
            change = USER_CHANGE.decode(msg.data)
        except DecodeError as exc:
            self.stats.inc("dead_letters")
            await deadletter.send(self.nc, "replicator", msg.subject, msg.data, exc)
            return
        log.debug("users changed", extra={"op": change.op, "username": change.username})
        self.trigger("event")

    async def _on_sync_request(self, msg) -> None:
        # Served in a task of its own: the subscription's callbacks run one after another, and a
        # second request must not wait for the first one's sync before it is even registered.
        task = asyncio.create_task(self._serve_sync(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_sync(self, msg) -> None:
        self.stats.inc("messages_in")
        try:
            req = SYNC_REQUEST.decode(msg.data) if msg.data.strip() else SyncRequest()
        except DecodeError as exc:
            self.stats.inc("dead_letters")
            # A micro error 400 like the other endpoints, with the status shape callers decode.
            bad = ReplicationStatus(
                host=self.host, ts=time.time(), ok=False, trigger="manual", error=f"malformed sync request: {exc}"[:500]
            )
            await deadletter.refuse(self.nc, "replicator", msg, exc, STATUS.encode(bad))
            return
        status = await self.request("manual")
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(STATUS.encode(status))
        await self._audit(req, status)

    async def _audit(self, req: SyncRequest, status: ReplicationStatus) -> None:
        """A requested sync is a control action: audited on this host's subject, success or not."""
        rec = AuditRecord(
            id=uuid.uuid4().hex,
            ts=time.time(),
            host=self.host,
            actor=req.actor[:200],
            action="replication.sync",
            target="users",
            params={"added": status.added, "updated": status.updated, "removed": status.removed, "total": status.total},
            result="ok" if status.ok else "error",
            code=200 if status.ok else 502,
            error=status.error,
            duration_ms=status.duration_ms,
            source=req.source[:20] or "nats",
        )
        await audit.record(self.nc.jetstream(), rec, self.stats)

    async def _scheduled(self) -> None:
        self.trigger("schedule")

    # -- the worker ----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            delay = self._due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._wake.clear()
            kind, self._pending = self._pending or "schedule", None
            waiters, self._waiters = self._waiters, []
            status = await self.sync_once(kind)
            for w in waiters:
                if not w.done():
                    w.set_result(status)

    async def sync_once(self, trigger: str = "manual") -> ReplicationStatus:
        """One sync, reported. Never raises: a failure leaves the local copy as it was."""
        t0 = time.perf_counter()
        try:
            central = await fetch_active_users(self.config.central_dsn, self.config.central_timeout)
            # Read each time: the host's accounts change without telling us.
            accounts = LocalAccounts.read(self.config.local_passwd)
            async with self.pool.acquire() as conn:
                counts = await applier.apply(conn, central, self._cache, accounts)
            if counts.skipped:
                log.warning(
                    "skipped central users that cannot be host accounts",
                    extra={"skipped": skipped_list(counts.skipped), "count": len(counts.skipped)},
                )
        except Exception as exc:  # noqa: BLE001 - any failure is reported, retried, never fatal
            status = ReplicationStatus(
                host=self.host,
                ts=time.time(),
                ok=False,
                trigger=trigger,
                duration_ms=(time.perf_counter() - t0) * 1000,
                error=describe(exc),
            )
            self.failures += 1
            backoff = min(self.config.retry_max, self.config.retry_min * 2 ** (self.failures - 1))
            self._schedule_retry(backoff)
            log.warning(
                "sync failed; local copy unchanged",
                extra={"trigger": trigger, "error": status.error, "retry_in_s": backoff, "failures": self.failures},
            )
        else:
            status = ReplicationStatus(
                host=self.host,
                ts=time.time(),
                ok=True,
                trigger=trigger,
                added=counts.added,
                updated=counts.updated,
                removed=counts.removed,
                total=counts.total,
                duration_ms=(time.perf_counter() - t0) * 1000,
                skipped=skipped_list(counts.skipped),
            )
            self.failures = 0
            self._cancel_retry()
            log.info(
                "sync done",
                extra={
                    "trigger": trigger,
                    "added": counts.added,
                    "updated": counts.updated,
                    "removed": counts.removed,
                    "total": counts.total,
                    "duration_ms": round(status.duration_ms, 1),
                },
            )
        self.last_status = status
        self._count(status)
        with contextlib.suppress(Exception):  # a NATS outage must not stop the syncs themselves
            await self.nc.publish(subjects.replica(self.host), STATUS.encode(status))
        return status

    def _count(self, status: ReplicationStatus) -> None:
        self.stats.inc("syncs")
        if status.ok:
            self.stats.inc("users_applied", status.added + status.updated + status.removed)
        else:
            self.stats.inc("sync_failures")

    def _schedule_retry(self, delay: float) -> None:
        self._cancel_retry()
        self._retry = asyncio.get_running_loop().call_later(delay, self.trigger, "retry")

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="replicator-worker")
        self._subs.append(await self.nc.subscribe(subjects.USERS_CHANGED, cb=self._on_users_changed))
        self._subs.append(await self.nc.subscribe(subjects.sync(self.host), cb=self._on_sync_request))
        await self.nc.flush()
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=datetime.UTC)
        self._scheduler.add_job(
            self._scheduled,
            "interval",
            seconds=self.config.interval,
            id="replicate",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(self.config.interval)),
        )
        self._scheduler.start()
        self.trigger("start")

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._cancel_retry()
        for task in list(self._tasks):
            task.cancel()
        if self._worker is not None:
            # A sync cut short rolls back: the local copy stays whole either way.
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


async def build(config: ReplicatorConfig, stack: contextlib.AsyncExitStack) -> ReplicatorService:
    host = config.host.host_id
    # apscheduler logs every job run at INFO; our own "sync done" line already says it.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    nc = await open_nats(stack, config.nats, f"replicator-{host}")
    pool = await open_pool(stack, DbSettings(dsn=config.local_dsn, pool_min=1, pool_max=2))
    await migrate(pool, "replicator", MIGRATIONS)
    service = ReplicatorService(config, nc, pool, host)
    await open_stats(
        stack, nc, "replicator", service.stats, host=host, description=f"fleetwatch user replication of host {host}"
    )
    return service
