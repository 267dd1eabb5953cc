"""One durable pull consumer: a fetcher feeding N writers, each with its own DB connection.

Per batch: decode (bad -> dead letter), store in one transaction (retrying while the database
is away, splitting the batch to isolate a row the database rejects), then ack every message.
Nothing is acked before its commit, so a crash at any point means redelivery, and the writes
are idempotent, so redelivery means no duplicates. Several ingest processes bound to the same
durable consumer share the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from libs.runtime import deadletter
from libs.schemas import DecodeError
from libs.schemas.streams import ConsumerSpec

from .db import Link, is_data_error
from .decode import Rejected, Skip
from .pull import Puller
from .writer import Item

log = logging.getLogger("fleetwatch.ingest")

SERVICE = "ingest"


class Stats:
    def __init__(self) -> None:
        self.batches = 0
        self.messages = 0
        self.deadlettered = 0
        self.skipped = 0
        self.retries = 0
        self.split = 0
        self.rows = 0  # messages stored (committed) in the database
        self.errors = 0  # batches that failed on a bug and were left for redelivery
        self.pending: int | None = None  # consumer lag as of the last fetch (JetStream metadata)


class Consumer:
    def __init__(
        self,
        nc: NATS,
        spec: ConsumerSpec,
        decode: Callable[[object], Item],
        write: Callable[[object, list[Item]], Awaitable[None]],
        links: list[Link],
        *,
        batch: int = 1000,
        fetch_timeout: float = 1.0,
        keepalive: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.nc = nc
        self.spec = spec
        self.decode = decode
        self.write = write
        self.links = links
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.keepalive = keepalive
        self.max_backoff = max_backoff
        self.stats = Stats()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=len(links) + 1)  # one batch ready while all write
        self._tasks: list[asyncio.Task] = []
        self.db_down_since: float | None = None

    async def start(self) -> None:
        self._puller = Puller(self.nc, self.spec.stream, self.spec.durable, batch=self.batch, wait=self.fetch_timeout)
        await self._puller.start()
        self._tasks.append(asyncio.create_task(self._fetch_loop(), name=f"fetch-{self.spec.durable}"))
        for link in self.links:
            self._tasks.append(
                asyncio.create_task(self._write_loop(link), name=f"write-{self.spec.durable}-{link.name}")
            )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for link in self.links:
            await link.close()
        with contextlib.suppress(Exception):
            await self._puller.stop()
        st = self.stats
        log.info(
            "consumer stopped",
            extra={
                "consumer": self.spec.durable,
                "batches": st.batches,
                "messages": st.messages,
                "deadlettered": st.deadlettered,
                "skipped": st.skipped,
                "retries": st.retries,
            },
        )

    async def _fetch_loop(self) -> None:
        delay = 0.2
        while True:
            try:
                msgs = await self._puller.fetch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected, consumer being recreated...: retry
                log.warning("fetch failed: %s", exc, extra={"consumer": self.spec.durable})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = 0.2
            if not msgs:
                continue
            with contextlib.suppress(Exception):
                self.stats.pending = msgs[-1].metadata.num_pending
            await self._queue.put(msgs)

    async def _write_loop(self, link: Link) -> None:
        while True:
            msgs = await self._queue.get()
            try:
                await self.handle(link, msgs)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the consumer: the batch is redelivered later
                self.stats.errors += 1
                log.exception("batch failed; leaving it unacked for redelivery", extra={"consumer": self.spec.durable})

    async def handle(self, link: Link, msgs: list) -> None:
        items: list[Item] = []
        done: list = []  # acked without a row: skipped or dead-lettered
        for msg in msgs:
            try:
                items.append(self.decode(msg))
            except (DecodeError, Rejected) as exc:
                await self._dead(msg, exc)
                done.append(msg)
            except Skip:
                self.stats.skipped += 1
                done.append(msg)
        if items:
            await self._store(link, items, msgs)
        for msg in msgs:
            with contextlib.suppress(Exception):  # a lost ack means a harmless redelivery
                await msg.ack()
        self.stats.batches += 1
        self.stats.messages += len(msgs)

    async def _dead(self, msg, reason) -> None:
        self.stats.deadlettered += 1
        await deadletter.send(self.nc, SERVICE, msg.subject, msg.data, reason)

    async def _store(self, link: Link, items: list[Item], batch_msgs: list) -> None:
        delay = 0.2
        last_keepalive = time.monotonic()
        while True:
            try:
                conn = await link.get()
                await self.write(conn, items)
                self.stats.rows += len(items)
                if self.db_down_since is not None:
                    log.info(
                        "database back; resuming",
                        extra={
                            "consumer": self.spec.durable,
                            "down_s": round(time.monotonic() - self.db_down_since, 1),
                        },
                    )
                    self.db_down_since = None
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_data_error(exc):
                    await self._split(link, items, batch_msgs, exc)
                    return
                if self.db_down_since is None:
                    self.db_down_since = time.monotonic()
                    log.warning(
                        "database unavailable (%s: %s); holding acks and retrying",
                        type(exc).__name__,
                        exc,
                        extra={"consumer": self.spec.durable},
                    )
                self.stats.retries += 1
                await link.reset()
            # Tell JetStream we are still on it, so it does not hand the batch to someone else.
            if time.monotonic() - last_keepalive >= self.keepalive and self.nc.is_connected:
                for m in batch_msgs:
                    with contextlib.suppress(Exception):
                        await m.in_progress()
                last_keepalive = time.monotonic()
            await asyncio.sleep(min(delay, self.keepalive))  # the keepalive is due on time, whatever the backoff
            delay = min(delay * 2, self.max_backoff)

    async def _split(self, link: Link, items: list[Item], batch_msgs: list, exc: Exception) -> None:
        """Halve the batch until the rows the database refuses are alone, and dead-letter those."""
        if len(items) == 1:
            await self._dead(items[0].msg, f"rejected by the database: {type(exc).__name__}: {exc}")
            return
        self.stats.split += 1
        mid = len(items) // 2
        await self._store(link, items[:mid], batch_msgs)
        await self._store(link, items[mid:], batch_msgs)
