"""Publishing that survives NATS being away: a bounded FIFO drained by one sender.

Sampling never waits for NATS: it only appends here. One sender publishes the head with
JetStream (waiting for the stream's ack), so frames reach the stream in the order they were
taken, and the head is removed only once stored. While NATS is unreachable the queue grows up to
`capacity`; then the oldest entry is dropped and counted. `Nats-Msg-Id` makes a retry of a
publish whose ack was lost harmless (the server deduplicates it); the ids are the collector's
(unguessable, see Collector.msg_id), and ingest's primary keys would absorb a second copy anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import NamedTuple

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import APIError

log = logging.getLogger("fleetwatch.collector.outbox")


class Item(NamedTuple):
    subject: str
    data: bytes
    msg_id: str


class Outbox:
    def __init__(self, nc: NATS, name: str, capacity: int, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.name = name
        self.capacity = max(1, capacity)
        self.timeout = timeout
        self.items: deque[Item] = deque()
        self.dropped = 0
        self.published = 0
        self.errors = 0  # publishes that failed and were retried
        self._wake = asyncio.Event()
        self._backlog_logged = False

    def put(self, subject: str, data: bytes, msg_id: str) -> None:
        if len(self.items) >= self.capacity:
            self.items.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("buffer full: dropped oldest", extra={"outbox": self.name, "dropped": self.dropped})
        self.items.append(Item(subject, data, msg_id))
        self._wake.set()

    def __len__(self) -> int:
        return len(self.items)

    async def run(self) -> None:
        delay = 0.2
        while True:
            if not self.items:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.nc.is_connected:
                await asyncio.sleep(0.2)
                continue
            head = self.items[0]
            try:
                await self.js.publish(
                    head.subject, head.data, timeout=self.timeout, headers={"Nats-Msg-Id": head.msg_id}
                )
            except (
                TimeoutError,
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError,
                nats.errors.StaleConnectionError,
                APIError,
                OSError,
            ) as exc:
                self.errors += 1
                if not self._backlog_logged:
                    log.warning(
                        "publishing paused: %s; buffering",
                        type(exc).__name__,
                        extra={"outbox": self.name, "buffered": len(self.items)},
                    )
                    self._backlog_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            # The head may have been dropped for space while we waited for the ack.
            if self.items and self.items[0] is head:
                self.items.popleft()
            self.published += 1
            if self._backlog_logged and not self.items:
                log.info("buffer drained", extra={"outbox": self.name, "dropped": self.dropped})
                self._backlog_logged = False
