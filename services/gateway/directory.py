"""The latest known state of every host, in memory: seeded from the database at start, then kept
current from NATS (frames and host info), so `/hosts` and `/metrics` never scan history tables."""

from __future__ import annotations

import asyncio
import gzip
import math
import time
from typing import Any

import msgspec

from libs.schemas import Codec, HostInfo, MetricFrame

from .summary import frame_summary


class HostView(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    status: str  # online | offline
    last_seen: float | None = None
    hostname: str = ""
    os: str = ""
    kernel: str = ""
    arch: str = ""
    cpu_model: str = ""
    cpu_count: int = 0
    mem_total: int = 0
    agent_version: str = ""
    labels: dict[str, str] = {}
    last: dict[str, Any] | None = None


class Body:
    """An encoded /hosts answer and the directory state it shows."""

    __slots__ = ("body", "version", "valid_until", "built", "checked")

    def __init__(self, body: bytes, version: int, valid_until: float, built: float | None = None) -> None:
        self.body = body
        self.version = version
        self.valid_until = valid_until  # wall time the first online host in it turns offline
        self.built = time.monotonic() if built is None else built
        self.checked = self.built  # the last moment it was known to show the directory as it is

    def current(self, version: int) -> bool:
        return version == self.version and time.time() < self.valid_until


class Entry:
    """What the gateway knows of one host. Its latest frame is kept as the bytes it arrived in and
    decoded again when asked for (`frame`): ten thousand decoded frames are some 170,000 objects
    that every full garbage collection walks, a pause of 100 ms and more on the event loop."""

    __slots__ = ("info", "raw", "ts", "disks", "summary", "last_seen", "frag", "frag_online")

    def __init__(self) -> None:
        self.info: HostInfo | None = None
        self.raw: bytes | None = None  # the latest frame, encoded
        self.ts = 0.0  # its ts
        self.disks: tuple[tuple[str, float], ...] = ()  # its (mount, percent) pairs, for /metrics
        self.summary: dict | None = None
        self.last_seen: float | None = None
        self.frag: bytes | None = None  # this host's JSON in /hosts, until something changes
        self.frag_online = False

    @property
    def frame(self) -> MetricFrame | None:
        return None if self.raw is None else _frames.decode(self.raw)


_enc = msgspec.json.Encoder()
_frames = Codec(MetricFrame)
BUILD_SLICE = 1000
# How far ahead of this clock a kept timestamp may be and still hold back what arrives later.
AHEAD_S = 60.0


def _newer(ts: float, kept: float) -> bool:
    """Whether a message stamped `ts` replaces one stamped `kept`: the later stamp wins, so a late
    copy of an older frame does not, but a kept stamp far ahead of this clock (a clock that was
    wrong, or a host's own `ts=1e308`) holds nothing back: arrival order wins over it. A stamp
    that is not a number never replaces anything (the hub refuses those before they get here)."""
    return math.isfinite(ts) and (ts >= kept or kept > time.time() + AHEAD_S)


class Directory:
    def __init__(self, offline_after_s: float) -> None:
        self.offline_after_s = offline_after_s
        self.max_age_s = 1.0
        self.hosts: dict[str, Entry] = {}
        # Bumped by every change a /hosts body can show (frames, host info, last seen).
        self.version = 0
        self._sorted: list[str] = []
        self._cache: dict[tuple, Body] = {}
        self._building: dict[tuple, asyncio.Future[Body]] = {}

    def _entry(self, host: str) -> Entry:
        e = self.hosts.get(host)
        if e is None:
            e = self.hosts[host] = Entry()
        return e

    def frame(self, f: MetricFrame, summary: dict | None = None, raw: bytes | None = None) -> None:
        """A frame arrived (`summary`: its frame_summary, `raw`: its encoding, when the caller
        already has them)."""
        e = self._entry(f.host)
        if _newer(f.ts, e.ts if e.raw is not None else -math.inf):
            e.raw = _frames.encode(f) if raw is None else raw
            e.ts = f.ts
            e.disks = tuple([(d.mount, d.percent) for d in f.disks])
            e.summary = frame_summary(f) if summary is None else summary
        # Age counts from when a frame arrived here, so a host with a skewed clock is not offline.
        e.last_seen = time.time()
        e.frag = None
        self.version += 1

    def info(self, h: HostInfo) -> None:
        e = self._entry(h.host)
        if _newer(h.ts, e.info.ts if e.info is not None else -math.inf):
            e.info = h
            e.frag = None
            self.version += 1

    def seen(self, host: str, ts: float) -> None:
        e = self._entry(host)
        e.last_seen = max(e.last_seen or 0.0, ts)
        e.frag = None
        self.version += 1

    def online(self, e: Entry, now: float) -> bool:
        return e.last_seen is not None and now - e.last_seen <= self.offline_after_s

    def view(self, host: str, now: float | None = None) -> HostView | None:
        e = self.hosts.get(host)
        now = now or time.time()
        return None if e is None else self._view(host, e, now, self.online(e, now))

    def _view(self, host: str, e: Entry, now: float, online: bool) -> HostView:
        i = e.info
        return HostView(
            host=host,
            status="online" if online else "offline",
            last_seen=e.last_seen,
            hostname=i.hostname if i else "",
            os=i.os if i else "",
            kernel=i.kernel if i else "",
            arch=i.arch if i else "",
            cpu_model=i.cpu_model if i else "",
            cpu_count=i.cpu_count if i else 0,
            mem_total=i.mem_total if i else 0,
            agent_version=i.agent_version if i else "",
            labels=dict(i.labels) if i else {},
            last=e.summary,
        )

    def _fragment(self, host: str, e: Entry, online: bool) -> bytes:
        if e.frag is None or e.frag_online != online:
            e.frag = _enc.encode(self._view(host, e, time.time(), online))
            e.frag_online = online
        return e.frag

    async def _build(self, status: str | None, label: tuple[str, str] | None) -> Body:
        """The JSON list, from each host's cached fragment. Yields to the event loop every
        BUILD_SLICE hosts, so requests are not held up behind a build of a large fleet."""
        version = self.version
        now = time.time()
        if len(self._sorted) != len(self.hosts):
            self._sorted = sorted(self.hosts)
        hosts = self._sorted
        limit = self.offline_after_s
        soonest_offline = math.inf
        out = [b"["]  # separators included, so the body is one join (a single copy of megabytes)
        for i, host in enumerate(hosts):
            if i and i % BUILD_SLICE == 0:
                await asyncio.sleep(0)
            e = self.hosts.get(host)
            if e is None:
                continue
            online = False
            if e.last_seen is not None and now - e.last_seen <= limit:
                online = True
                soonest_offline = min(soonest_offline, e.last_seen + limit)
            if status and (status == "online") != online:
                continue
            if label and (e.info is None or e.info.labels.get(label[0]) != label[1]):
                continue
            if len(out) > 1:
                out.append(b",")
            out.append(self._fragment(host, e, online))
        out.append(b"]")
        return Body(b"".join(out), version, soonest_offline)

    async def list_body(self, status: str | None, label: tuple[str, str] | None, gzip: bool) -> bytes:
        """Encoded list of every host (filtered). Reused as long as nothing in the directory
        changed and no host went offline since; otherwise rebuilt at most every `max_age_s` and
        served stale while a rebuild runs: a dashboard of many clients polling `/hosts` costs at
        most one encoding (and one compression, off the event loop) per second, not one per
        request, and nothing at all while the fleet is quiet. Each host's JSON is re-encoded
        only when its data or its online state changed."""
        key = (status, label, gzip)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None:
            if now - hit.built < self.max_age_s:
                return hit.body
            if hit.current(self.version):
                hit.checked = now
                return hit.body
        job = self._building.get(key)
        if job is None:
            job = self._building[key] = asyncio.ensure_future(self._rebuild(key))
        # Staleness counts from when the body was last seen current, not from when it was built:
        # a body built long ago and current until the fleet's burst of frames a moment ago is
        # served while the rebuild runs, instead of every poller waiting for a whole build.
        if hit is not None and now - hit.checked < 5 * self.max_age_s:
            return hit.body  # stale by at most a rebuild
        return (await asyncio.shield(job)).body

    async def _rebuild(self, key: tuple) -> Body:
        status, label, gz = key
        try:
            if gz:
                # Compressed from the plain body of the same state (built now if that is old).
                plain_key = (status, label, False)
                plain = self._cache.get(plain_key)
                if plain is None or not (
                    time.monotonic() - plain.built < self.max_age_s or plain.current(self.version)
                ):
                    job = self._building.get(plain_key)
                    if job is None:
                        job = self._building[plain_key] = asyncio.ensure_future(self._rebuild(plain_key))
                    plain = await asyncio.shield(job)
                data = await asyncio.to_thread(gzip.compress, plain.body, 1, mtime=0)
                body = Body(data, plain.version, plain.valid_until, plain.built)
            else:
                body = await self._build(status, label)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = body
            return body
        finally:
            self._building.pop(key, None)


SUMMARY_COLUMNS = (
    "cpu_percent",
    "load1",
    "mem_percent",
    "mem_used",
    "mem_total",
    "swap_percent",
    "disk_max_percent",
    "net_bytes_recv",
    "net_bytes_sent",
    "gpu_util_percent",
    "procs_total",
    "uptime",
)


async def seed_from_db(directory: Directory, pool) -> int:
    """Hosts and their newest stored frame (ingest's tables), so a freshly started gateway knows
    the fleet before the next frames arrive. Returns how many hosts were loaded."""
    if not await pool.fetchval("SELECT to_regclass('hosts') IS NOT NULL AND to_regclass('metrics') IS NOT NULL"):
        return 0
    cols = ", ".join(f"m.{c}" for c in SUMMARY_COLUMNS)
    rows = await pool.fetch(
        f"""SELECT h.host, h.hostname, h.os, h.kernel, h.arch, h.cpu_model, h.cpu_count, h.mem_total AS info_mem_total,
                   h.agent_version, h.labels::text AS labels, h.info_time, h.last_seen,
                   m.time, m.seq, {cols}
              FROM hosts h
              LEFT JOIN LATERAL (SELECT * FROM metrics WHERE host = h.host AND time > now() - interval '1 day'
                                 ORDER BY time DESC LIMIT 1) m ON true"""
    )
    for r in rows:
        e = directory._entry(r["host"])
        if e.info is None:
            e.info = HostInfo(
                host=r["host"],
                ts=r["info_time"].timestamp() if r["info_time"] else 0.0,
                hostname=r["hostname"],
                os=r["os"],
                kernel=r["kernel"],
                arch=r["arch"],
                cpu_model=r["cpu_model"],
                cpu_count=r["cpu_count"],
                mem_total=r["info_mem_total"],
                agent_version=r["agent_version"],
                labels=msgspec.json.decode(r["labels"] or "{}"),
            )
        if e.raw is None and r["time"] is not None:
            e.summary = {
                "host": r["host"],
                "ts": r["time"].timestamp(),
                "seq": r["seq"],
                **{c: r[c] for c in SUMMARY_COLUMNS},
            }
        e.frag = None
        seen = r["last_seen"] or r["time"]
        if seen is not None and e.last_seen is None:
            e.last_seen = seen.timestamp()
    directory.version += 1
    return len(rows)
