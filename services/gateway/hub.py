"""Live events for SSE and WebSocket clients: NATS subscriptions -> one encoded event -> a replay
buffer and each matching client's bounded queue. A client whose queue is full is dropped (its
connection closed), so one slow reader never holds up the others or the server."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from libs.schemas import (
    AlertEvent,
    AppStatus,
    Codec,
    DecodeError,
    HealthResult,
    HostInfo,
    MetricFrame,
    ProcessSnapshot,
    ReplicationStatus,
    UserChange,
)
from libs.schemas import subjects as s
from libs.schemas.subjects import token

from .summary import frame_summary

log = logging.getLogger("fleetwatch.gateway.hub")

KINDS = ("frame", "procs", "host", "app", "health", "alert", "replica", "user")
# Process snapshots are large: a client gets them only when it asks for them by kind.
DEFAULT_KINDS = frozenset(k for k in KINDS if k != "procs")
# Longest a burst of NATS messages holds the event loop before requests get a turn.
YIELD_S = 0.002
# A timestamp further ahead than this is refused, as ingest refuses to store it (its default
# FLEETWATCH_INGEST_FUTURE_TOLERANCE): `ts=1e308` would otherwise pin a host's live entry.
FUTURE_TOLERANCE_S = 86400.0

_enc = msgspec.json.Encoder()


# subject, codec, decoded message -> (event kind, host, event data, timestamp), and whether the
# subject's host token binds the body's `host` (what a host agent publishes; the alerter's
# fleet.alerts.<host>.<rule> is central and names `_fleet` for fleet-wide alerts).
HANDLERS: list[tuple[str, Codec[Any], Callable[[Any], tuple[str, str, Any, float]], bool]] = [
    (s.METRICS_ALL, Codec(MetricFrame), lambda m: ("frame", m.host, frame_summary(m), m.ts), True),
    (s.PROCS_ALL, Codec(ProcessSnapshot), lambda m: ("procs", m.host, m, m.ts), True),
    (s.HOSTS_ALL, Codec(HostInfo), lambda m: ("host", m.host, m, m.ts), True),
    (s.APPS_ALL, Codec(AppStatus), lambda m: ("app", m.host, m, m.ts), True),
    (s.HEALTH_ALL, Codec(HealthResult), lambda m: ("health", "", m, m.ts), False),
    (s.ALERTS_ALL, Codec(AlertEvent), lambda m: ("alert", m.host, m, m.ts), False),
    (s.REPLICA_ALL, Codec(ReplicationStatus), lambda m: ("replica", m.host, m, m.ts), True),
    (s.USERS_CHANGED, Codec(UserChange), lambda m: ("user", "", m, m.ts), False),
]


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


class Batch:
    """Events handed to every client of a group at once; the SSE bytes are joined once for all."""

    __slots__ = ("events", "_sse")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self._sse: bytes | None = None

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = b"".join(ev.sse for ev in self.events)
        return self._sse


def _wants(hosts: frozenset[str] | None, kinds: frozenset[str], ev: Event) -> bool:
    return ev.kind in kinds and (hosts is None or ev.host in hosts or ev.host == "")


class Group:
    """Clients with the same filter: an event is matched once per group, not once per client."""

    __slots__ = ("key", "hosts", "kinds", "clients", "events")

    def __init__(self, hosts: frozenset[str] | None, kinds: frozenset[str]) -> None:
        self.key = (hosts, kinds)
        self.hosts = hosts
        self.kinds = kinds
        self.clients: set[Client] = set()
        self.events: list[Event] = []


class Client:
    """One live connection's queue. Its writer waits on a bare future that the hub resolves when
    a batch (or a heartbeat) is due: no Event, no timer per wait, since with a thousand clients
    woken twenty times a second those cost more than writing the bytes."""

    __slots__ = (
        "hosts",
        "kinds",
        "maxsize",
        "pending",
        "queued",
        "dropped",
        "group",
        "seen",
        "beat",
        "last_out",
        "_waiter",
    )

    def __init__(self, hosts: frozenset[str] | None, kinds: frozenset[str], maxsize: int) -> None:
        self.hosts = hosts
        self.kinds = kinds
        self.maxsize = maxsize
        self.pending: list[Batch] = []
        self.queued = 0  # events in `pending`
        self.dropped = asyncio.Event()
        self.group: Group | None = None
        self.seen = 0  # ids up to this one were replayed; skip them in the group's next batch
        self.beat = False  # a heartbeat is due (nothing went out for heartbeat_s)
        self.last_out = time.monotonic()
        self._waiter: asyncio.Future | None = None

    def wants(self, ev: Event) -> bool:
        return _wants(self.hosts, self.kinds, ev)

    def wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next(self) -> bool:
        """Wait for the hub: True when batches are pending (read them with `take`), False when
        a heartbeat is due instead."""
        while not self.pending:
            if self.beat:
                self.beat = False
                return False
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    def take(self) -> list[Batch]:
        out = self.pending
        self.pending = []
        self.queued = 0
        self.beat = False  # what goes out now keeps the connection alive as well
        return out


class Hub:
    def __init__(
        self, *, max_clients: int, queue_size: int, buffer_size: int, heartbeat_s: float, batch_s: float = 0.0
    ) -> None:
        self.max_clients = max_clients
        self.batch_s = batch_s
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.buffer: collections.deque[Event] = collections.deque(maxlen=buffer_size)
        self.clients: set[Client] = set()
        self.groups: dict[tuple, Group] = {}
        self.last_id = 0
        self.published = 0
        self.dropped = 0
        self.rejected = 0
        self.decode_errors = 0
        # Messages refused: a body naming another host than its subject's (a host agent speaks
        # for its own host only), or a timestamp that is not a number or far in the future.
        self.refused = 0
        self._subs: list = []
        self._dirty: set[Group] = set()
        self._ticker: asyncio.Task | None = None
        self._listeners: dict[str, list] = {}
        self._now = time.monotonic()
        self._yield_at = 0.0

    # -- clients -------------------------------------------------------------------------
    def add(self, hosts: Iterable[str] | None, kinds: Iterable[str] | None, last_event_id: int | None = None) -> Client:
        if len(self.clients) >= self.max_clients:
            self.rejected += 1
            raise HubFull()
        c = Client(frozenset(hosts) if hosts else None, frozenset(kinds) if kinds else DEFAULT_KINDS, self.queue_size)
        g = self.groups.get((c.hosts, c.kinds))
        if g is None:
            g = self.groups[(c.hosts, c.kinds)] = Group(c.hosts, c.kinds)
        if last_event_id is not None:
            # Events already waiting in the group reach this client with the group's next batch.
            upto = g.events[0].id - 1 if g.events else self.last_id
            self._replay(c, last_event_id, upto)
            c.seen = max(last_event_id, upto) if last_event_id <= self.last_id else 0
        c.group = g
        g.clients.add(c)
        self.clients.add(c)
        return c

    def remove(self, c: Client) -> None:
        self.clients.discard(c)
        g = c.group
        if g is not None:
            g.clients.discard(c)
            if not g.clients and self.groups.get(g.key) is g:
                del self.groups[g.key]
                self._dirty.discard(g)

    def _replay(self, c: Client, last_id: int, upto: int) -> None:
        first = self.buffer[0].id if self.buffer else self.last_id + 1
        events: list[Event] = []
        if last_id < first - 1 or last_id > self.last_id:
            # Events were lost (too old, or an id from another gateway): say so, then go on live.
            events.append(Event(0, "gap", "", {"last_event_id": last_id, "oldest": first}, 0.0))
        events += [ev for ev in self.buffer if last_id < ev.id <= upto and c.wants(ev)]
        events = events[-c.maxsize :]
        if events:
            c.pending.append(Batch(events))
            c.queued = len(events)
            c.wake()

    def publish(self, kind: str, host: str, data: Any, ts: float) -> Event:
        self.last_id += 1
        ev = Event(self.last_id, kind, host, data, ts)
        self.buffer.append(ev)
        self.published += 1
        for g in self.groups.values():
            if _wants(g.hosts, g.kinds, ev):
                g.events.append(ev)
                self._dirty.add(g)
        if self.batch_s <= 0:
            self._flush()
        return ev

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        self._now = time.monotonic()
        for g in dirty:
            if not g.events:
                continue
            batch = Batch(g.events)
            g.events = []
            for c in g.clients:
                if c.seen:
                    # Joined with Last-Event-ID while this batch was gathering: only what is newer.
                    mine = Batch([ev for ev in batch.events if ev.id > c.seen])
                    c.seen = 0
                    if mine.events:
                        self._deliver(c, mine)
                    continue
                self._deliver(c, batch)

    def _deliver(self, c: Client, batch: Batch) -> None:
        n = len(batch.events)
        if c.queued + n > c.maxsize:
            if not c.dropped.is_set():
                c.dropped.set()
                self.dropped += 1
            return
        c.pending.append(batch)
        c.queued += n
        c.last_out = self._now
        c.wake()

    def _beats(self, now: float) -> None:
        for c in self.clients:
            if now - c.last_out >= self.heartbeat_s:
                c.last_out = now
                c.beat = True
                c.wake()

    async def _tick(self) -> None:
        """Hand new events to clients every `batch_s`: a busy stream goes out in a few larger
        writes instead of one wake-up and one write per event per client, which with a thousand
        clients costs more than the events themselves. Also marks heartbeats due, so no client
        keeps a timer of its own."""
        beat_every = min(1.0, self.heartbeat_s / 4)
        next_beat = time.monotonic() + beat_every
        while True:
            await asyncio.sleep(self.batch_s if self.batch_s > 0 else beat_every)
            if self._dirty:
                self._flush()
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat_every
                self._beats(now)

    # -- NATS ----------------------------------------------------------------------------
    def listen(self, kind: str, cb) -> None:
        """Also hand every decoded message of `kind` to `cb(message, event_data, raw)` (the host
        directory; for frames, event_data is the summary, made once for both; raw: the message's
        bytes as they came)."""
        self._listeners.setdefault(kind, []).append(cb)

    async def start(self, nc) -> None:
        self._ticker = asyncio.ensure_future(self._tick())
        for subject, codec, convert, bound in HANDLERS:
            self._subs.append(
                await nc.subscribe(subject, cb=self._handler(codec, convert, bound), pending_msgs_limit=200_000)
            )

    def accept(self, subject: str, host: str, ts: float, bound: bool) -> bool:
        """Whether a decoded message may change what the gateway shows. On a host's subject
        (`bound`) the host is the subject's, whatever the body says; a timestamp must be a
        number and not far ahead (a newer one wins in the directory)."""
        if bound and host != token(subject, 2):
            reason = "host in the body is not the subject's"
        elif not math.isfinite(ts) or ts > time.time() + FUTURE_TOLERANCE_S:
            reason = "timestamp not a number or far in the future"
        else:
            return True
        self.refused += 1
        log.debug("message refused", extra={"subject": subject, "reason": reason})
        return False

    def _handler(self, codec: Codec, convert, bound: bool = False):
        async def handle(msg) -> None:
            try:
                obj = codec.decode(msg.data)
            except DecodeError as exc:
                # Ingest dead-letters what the streams carry; the gateway only skips and counts.
                self.decode_errors += 1
                log.debug("undecodable message skipped", extra={"subject": msg.subject, "reason": str(exc)})
                return
            if not self.accept(msg.subject, obj.host if bound else "", obj.ts, bound):
                return
            kind, host, data, ts = convert(obj)
            for cb in self._listeners.get(kind, ()):
                cb(obj, data, msg.data)
            self.publish(kind, host, data, ts)
            # nats-py hands a subscription's queued messages over without returning to the
            # event loop in between: a burst (a whole fleet's frames at once) would hold every
            # request until it is through. A pause once YIELD_S has gone by bounds that, whatever
            # a message costs.
            if time.perf_counter() >= self._yield_at:
                await asyncio.sleep(0)
                self._yield_at = time.perf_counter() + YIELD_S

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
