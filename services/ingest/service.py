"""The ingest service: migrations, then one consumer per stream, plus housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from libs.runtime import ServiceStats, jetstream
from libs.schemas import streams

from . import maintenance, rollups, schema, tsjobs
from .config import IngestConfig
from .consumer import Consumer
from .db import Link
from .decode import Decoder
from .writer import EventsWriter, MetricsWriter, Partitions

log = logging.getLogger("fleetwatch.ingest")

# In provisioning order (EVENTS hands its old subjects to CENTRAL). Ingest never relies on
# JetStream's dedupe for correctness: a second copy of a message (a publisher's retry, another
# publisher's id) lands on the tables' primary keys and ON CONFLICT DO NOTHING.
OWN_STREAMS = (
    streams.METRICS,
    streams.EVENTS,
    streams.CENTRAL,
    streams.AUDIT,
    streams.DEADLETTER,
    streams.AGENT_DEADLETTER,
)
OWN_CONSUMERS = {
    "metrics": streams.INGEST_METRICS,
    "events": streams.INGEST_EVENTS,
    "central": streams.INGEST_CENTRAL,
    "audit": streams.INGEST_AUDIT,
}


async def connect_db(dsn: str, stop_after: float | None = None) -> asyncpg.Connection:
    """Wait for the database as long as it takes (ingest may start first, or during an outage)."""
    delay = 0.2
    started = time.monotonic()
    while True:
        try:
            return await asyncpg.connect(dsn, timeout=10)
        except (
            TimeoutError,
            OSError,
            asyncpg.CannotConnectNowError,
            asyncpg.InvalidCatalogNameError,
            asyncpg.PostgresConnectionError,
        ) as exc:
            if stop_after is not None and time.monotonic() - started > stop_after:
                raise
            log.warning("database not reachable yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def consumer_specs(ack_wait: float) -> dict[str, streams.ConsumerSpec]:
    """Ingest's consumers with this deployment's ack wait (the time JetStream gives a batch
    before handing it to another process)."""
    return {n: msgspec.structs.replace(spec, ack_wait_s=ack_wait) for n, spec in OWN_CONSUMERS.items()}


async def ensure_jetstream(nc: NATS, names: list[str], ack_wait: float = streams.INGEST_METRICS.ack_wait_s) -> None:
    """Ingest's own streams and consumers, in case it starts before anything provisioned them.
    Several replicas may race here: a losing create is retried as an update."""
    specs = consumer_specs(ack_wait)
    js = nc.jetstream()
    for attempt in range(5):
        try:
            replicas = min(3, await jetstream.cluster_size(nc))
            for spec in OWN_STREAMS:
                await jetstream.ensure_stream(js, spec, replicas)
            for n in names:
                await jetstream.ensure_consumer(js, specs[n])
            return
        except Exception as exc:
            if attempt == 4:
                raise
            log.warning("provisioning raced or failed (%s); retrying", exc)
            await asyncio.sleep(0.5 * (attempt + 1))


def tune_gc() -> None:
    """Each batch allocates tens of thousands of short-lived objects (decoded frames) that die by
    reference counting; the default collector thresholds make Python rescan everything alive
    many times per batch, which more than doubles decode time. Collect less often, and keep the
    long-lived startup objects out of the scans."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class Ingest:
    def __init__(self, config: IngestConfig, nc: NATS) -> None:
        self.config = config
        self.nc = nc
        self.consumers: dict[str, Consumer] = {}
        self.metrics_writer: MetricsWriter | None = None
        self.events_writer = EventsWriter()
        self.storage: schema.Storage | None = None
        self._tasks: list[asyncio.Task] = []
        self.stats = ServiceStats()
        for name, field in (
            ("messages_in", "messages"),
            ("rows_written", "rows"),
            ("batches", "batches"),
            ("dead_letters", "deadlettered"),
            ("skipped", "skipped"),
            ("db_retries", "retries"),
            ("errors", "errors"),
        ):
            self.stats.counter(name, functools.partial(self._total, field))
        self.stats.pending(
            lambda: {c.spec.durable: c.stats.pending for c in self.consumers.values() if c.stats.pending is not None}
        )
        # TimescaleDB jobs whose last run failed (absent without TimescaleDB) and the policies
        # ingest ran in their place: an alert rule on the gauge tells the operator.
        self.jobs = tsjobs.JobWatch()
        self.stats.gauge("timescale_jobs_failing", lambda: self.jobs.failing)
        self.stats.counter("timescale_fallback_runs", lambda: self.jobs.fallback_runs)
        self.stats.queue("batches_ready", lambda: sum(c._queue.qsize() for c in self.consumers.values()))

    def _total(self, field: str) -> int:
        """One `Stats` counter summed over the consumers."""
        return sum(getattr(c.stats, field) for c in self.consumers.values())

    async def start(self) -> None:
        cfg = self.config
        tune_gc()
        conn = await connect_db(cfg.db.dsn)
        try:
            if cfg.migrate:
                applied = await schema.apply(conn, cfg.storage)
                if applied:
                    log.info("migrations applied", extra={"applied": applied})
            storage = self.storage = await schema.storage(conn)
            await maintenance.run_once(conn, storage, cfg.events_retention_days)
            await self._check_jobs(conn)
        finally:
            await conn.close()
        log.info("history storage", extra={"backend": storage.backend})
        await ensure_jetstream(self.nc, cfg.streams, cfg.ack_wait)
        specs = consumer_specs(cfg.ack_wait)

        plain = storage.backend == "partitions"
        decoder = Decoder(storage.raw_retention_s, cfg.future_tolerance)
        metrics_writer = self.metrics_writer = MetricsWriter(
            rollups=plain, partitions=Partitions() if plain else None, last_seen_every=cfg.last_seen_every
        )
        for name in cfg.streams:
            if name == "metrics":
                links = [Link(cfg.db.dsn, f"metrics-{i}") for i in range(cfg.metrics_writers)]
                decode, write = decoder.metrics, metrics_writer.write
            else:
                links = [Link(cfg.db.dsn, name)]
                decode, write = decoder.events, self.events_writer.write
            c = Consumer(
                self.nc,
                specs[name],
                decode,
                write,
                links,
                batch=cfg.batch,
                fetch_timeout=cfg.fetch_timeout,
                keepalive=cfg.keepalive,
            )
            await c.start()
            self.consumers[name] = c
        self._tasks.append(asyncio.create_task(self._maintenance_loop(storage), name="maintenance"))
        self._tasks.append(asyncio.create_task(self._jobs_loop(), name="timescale-jobs"))
        if plain:
            self._tasks.append(asyncio.create_task(self._rollup_loop(), name="rollups"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in self.consumers.values():
            await c.stop()
        if self.storage is not None and self.storage.backend == "partitions":
            # What this process committed is in the rollups before it goes (another process or
            # the next start would fold it anyway).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._fold_once(), 10)

    async def _fold_once(self) -> int | None:
        conn = await asyncpg.connect(self.config.db.dsn, timeout=10)
        try:
            return await rollups.fold(conn)
        finally:
            await conn.close()

    async def _rollup_loop(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await asyncio.sleep(self.config.rollup_every)
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(
                            self.config.db.dsn,
                            timeout=10,
                            server_settings={"application_name": "fleetwatch-ingest-rollups"},
                        )
                    await rollups.fold(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database away: what is pending stays pending
                    log.warning("rollup fold failed: %s: %s", type(exc).__name__, exc)
                    if conn is not None:
                        conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                conn.terminate()

    async def _maintenance_loop(self, storage: schema.Storage) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            try:
                conn = await connect_db(self.config.db.dsn, stop_after=60)
                try:
                    await maintenance.run_once(conn, storage, self.config.events_retention_days)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance failed: %s", exc)

    async def _check_jobs(self, conn: asyncpg.Connection) -> None:
        try:
            await self.jobs.check(conn)
        except asyncpg.PostgresError as exc:  # a view that changed shape must not stop ingest
            log.warning("TimescaleDB job check failed: %s", exc)

    async def _jobs_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.jobs_check_interval)
            try:
                conn = await connect_db(self.config.db.dsn, stop_after=60)
                try:
                    await self._check_jobs(conn)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("TimescaleDB job check failed: %s", exc)


async def build(config: IngestConfig, stack: contextlib.AsyncExitStack) -> Ingest:
    from libs.runtime import open_nats, open_stats

    nc = await open_nats(stack, config.nats, "ingest")
    ingest = Ingest(config, nc)
    await open_stats(
        stack, nc, "ingest", ingest.stats, description="fleetwatch history writer: JetStream -> PostgreSQL"
    )
    return ingest
