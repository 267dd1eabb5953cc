"""Live events for SSE and WebSocket clients: NATS subscriptions -> one encoded event -> a replay
buffer and each matching client's bounded queue. A client whose queue is full is dropped (its
connection closed), so one slow reader never holds up the others or the server."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable
from typing import Any

import msgspec

from libs.schemas import AlertEvent, AppStatus, Codec, DecodeError, HealthResult, HostInfo, MetricFrame, ProcessSnapshot, ReplicationStatus, UserChange
from libs.schemas import subjects as s

from .summary import frame_summary

log = logging.getLogger("fleetwatch.gateway.hub")

KINDS = ("frame", "procs", "host", "app", "health", "alert", "replica", "user")
# Process snapshots are large: a client gets them only when it asks for them by kind.
DEFAULT_KINDS = frozenset(k for k in KINDS if k != "procs")

_enc = msgspec.json.Encoder()


class Event:
    __slots__ = ("id", "kind", "host", "json", "sse")

    def __init__(self, id: int, kind: str, host: str, data: Any, ts: float) -> None:
        self.id = id
        self.kind = kind
        self.host = host
        self.json = _enc.encode({"id": id, "kind": kind, "host": host, "ts": ts, "data": data})
        self.sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (id, kind.encode(), self.json)


class HubFull(Exception):
    pass


class Client:
    __slots__ = ("hosts", "kinds", "maxsize", "pending", "wake", "dropped")

    def __init__(self, hosts: frozenset[str] | None, kinds: frozenset[str], maxsize: int) -> None:
        self.hosts = hosts
        self.kinds = kinds
        self.maxsize = maxsize
        self.pending: collections.deque[Event] = collections.deque()
        self.wake = asyncio.Event()
        self.dropped = asyncio.Event()

    def wants(self, ev: Event) -> bool:
        return ev.kind in self.kinds and (self.hosts is None or ev.host in self.hosts or ev.host == "")

    def take(self) -> list[Event]:
        out = list(self.pending)
        self.pending.clear()
        self.wake.clear()
        return out


class Hub:
    def __init__(self, *, max_clients: int, queue_size: int, buffer_size: int, heartbeat_s: float, batch_s: float = 0.0) -> None:
        self.max_clients = max_clients
        self.batch_s = batch_s
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.buffer: collections.deque[Event] = collections.deque(maxlen=buffer_size)
        self.clients: set[Client] = set()
        self.last_id = 0
        self.published = 0
        self.dropped = 0
        self.rejected = 0
        self.decode_errors = 0
        self._subs: list = []
        self._dirty: set[Client] = set()
        self._ticker: asyncio.Task | None = None
        self._listeners: dict[str, list] = {}

    # -- clients -------------------------------------------------------------------------
    def add(self, hosts: Iterable[str] | None, kinds: Iterable[str] | None, last_event_id: int | None = None) -> Client:
        if len(self.clients) >= self.max_clients:
            self.rejected += 1
            raise HubFull()
        c = Client(frozenset(hosts) if hosts else None, frozenset(kinds) if kinds else DEFAULT_KINDS, self.queue_size)
        if last_event_id is not None:
            self._replay(c, last_event_id)
        self.clients.add(c)
        return c

    def remove(self, c: Client) -> None:
        self.clients.discard(c)
        self._dirty.discard(c)

    def _replay(self, c: Client, last_id: int) -> None:
        first = self.buffer[0].id if self.buffer else self.last_id + 1
        if last_id < first - 1 or last_id > self.last_id:
            # Events were lost (too old, or an id from another gateway): say so, then go on live.
            gap = Event(0, "gap", "", {"last_event_id": last_id, "oldest": first}, 0.0)
            c.pending.append(gap)
        for ev in self.buffer:
            if ev.id > last_id and c.wants(ev):
                c.pending.append(ev)
        while len(c.pending) > c.maxsize:
            c.pending.popleft()
        if c.pending:
            c.wake.set()

    def publish(self, kind: str, host: str, data: Any, ts: float) -> Event:
        self.last_id += 1
        ev = Event(self.last_id, kind, host, data, ts)
        self.buffer.append(ev)
        self.published += 1
        for c in self.clients:
            if c.wants(ev):
                if len(c.pending) >= c.maxsize:
                    if not c.dropped.is_set():
                        c.dropped.set()
                        self.dropped += 1
                    continue
                c.pending.append(ev)
                if self.batch_s > 0:
                    self._dirty.add(c)
                else:
                    c.wake.set()
        return ev

    async def _tick(self) -> None:
        """Wake the writers of clients with new events every `batch_s`: a busy stream goes out in
        a few larger writes instead of one wake-up and one write per event per client, which with
        a thousand clients costs more than the events themselves."""
        while True:
            await asyncio.sleep(self.batch_s)
            if self._dirty:
                dirty, self._dirty = self._dirty, set()
                for c in dirty:
                    c.wake.set()

    # -- NATS ----------------------------------------------------------------------------
    def listen(self, kind: str, cb) -> None:
        """Also hand every decoded message of `kind` to `cb` (the host directory)."""
        self._listeners.setdefault(kind, []).append(cb)

    async def start(self, nc) -> None:
        if self.batch_s > 0:
            self._ticker = asyncio.ensure_future(self._tick())
        handlers = [
            (s.METRICS_ALL, Codec(MetricFrame), lambda m: ("frame", m.host, frame_summary(m), m.ts)),
            (s.PROCS_ALL, Codec(ProcessSnapshot), lambda m: ("procs", m.host, m, m.ts)),
            (s.HOSTS_ALL, Codec(HostInfo), lambda m: ("host", m.host, m, m.ts)),
            (s.APPS_ALL, Codec(AppStatus), lambda m: ("app", m.host, m, m.ts)),
            (s.HEALTH_ALL, Codec(HealthResult), lambda m: ("health", "", m, m.ts)),
            (s.ALERTS_ALL, Codec(AlertEvent), lambda m: ("alert", m.host, m, m.ts)),
            (s.REPLICA_ALL, Codec(ReplicationStatus), lambda m: ("replica", m.host, m, m.ts)),
            (s.USERS_CHANGED, Codec(UserChange), lambda m: ("user", "", m, m.ts)),
        ]
        for subject, codec, convert in handlers:
            self._subs.append(await nc.subscribe(subject, cb=self._handler(codec, convert), pending_msgs_limit=200_000))

    def _handler(self, codec: Codec, convert):
        async def handle(msg) -> None:
            try:
                obj = codec.decode(msg.data)
            except DecodeError as exc:
                # Ingest dead-letters what the streams carry; the gateway only skips and counts.
                self.decode_errors += 1
                log.debug("undecodable message skipped", extra={"subject": msg.subject, "reason": str(exc)})
                return
            kind, host, data, ts = convert(obj)
            for cb in self._listeners.get(kind, ()):
                cb(obj)
            self.publish(kind, host, data, ts)

        return handle

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # connection already closing
                pass
        for c in list(self.clients):
            c.dropped.set()
