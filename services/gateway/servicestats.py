"""The services' own counters on `/metrics`: a scatter-gather over NATS, cached.

Every fleetwatch service answers NATS micro discovery (libs.runtime.stats); its counters ride
in the `data` of its `stats` endpoint. A host agent may be compromised, and every agent may
answer `$SRV.STATS` and `$SRV.STATS.<agent kind>` under any name it likes, so a reply is only
believed for what the subject it answered proves:

- central services: one `$SRV.STATS.<kind>` per central kind (`metrics_services`' when set);
  no agent may subscribe there, and a reply naming another kind is left out;
- agents: one request per known host and agent kind on `fleet.svc.<kind>.<host>`, which only
  that host's agents may subscribe to; the row is that kind on that host, whatever the body says.

Replies come back on `<inbox>.c.<kind>` / `<inbox>.a.<kind>.<host>`, the asked subject's key. The
rendered text is kept for `metrics_cache_s`, so a burst of scrapes costs NATS one gather. An
instance seen earlier that stops answering reads `fleetwatch_service_up 0` until forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from libs.runtime import ServiceStats
from libs.runtime.stats import STATS_ENDPOINT
from libs.schemas import subjects
from libs.schemas.ids import InvalidId
from libs.schemas.servicestats import ServiceCounters

from .promstats import _esc, _num

log = logging.getLogger("fleetwatch.gateway.servicestats")

MAX_REPLIES = 50_000  # a scrape's bound on memory, whatever answers
FORGET_S = 600.0  # how long a silent instance is reported down before it is left out
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")
# Families the exposition defines itself; a service gauge of the same name is left out.
_FIXED = {"up", "uptime_seconds", "consumer_pending", "queue_size"}

Labels = tuple[str, str, str]  # service, instance, host


def gateway_stats(gw) -> ServiceStats:
    """What this gateway reports about itself in `$SRV.STATS` (other gateways scrape it too)."""
    s = ServiceStats()
    s.counter("messages_in", lambda: sum(gw.stats.count.values()))
    s.counter("errors", lambda: sum(n for (_m, _r, status), n in gw.stats.count.items() if status >= 500))
    s.counter("messages_out", lambda: gw.hub.published)
    s.counter("stream_dropped", lambda: gw.hub.dropped)
    s.counter("stream_rejected", lambda: gw.hub.rejected)
    s.counter(
        "decode_errors", lambda: gw.hub.decode_errors
    )  # skipped, not dead-lettered: ingest quarantines what the streams carry
    s.counter("refused_messages", lambda: gw.hub.refused)  # another host's name, a far-off ts
    s.counter("refused_stats_replies", lambda: gw.services.refused if gw.services else 0)
    s.counter("logins", lambda: gw.logins_ok)
    s.counter("login_failures", lambda: gw.logins_failed)
    s.counter("remote_write_samples", lambda: gw.remote.stats.samples)
    s.counter("remote_write_rejected", lambda: sum(gw.remote.stats.rejected.values()))
    s.gauge("stream_clients", lambda: len(gw.hub.clients))
    s.gauge("hosts", lambda: len(gw.directory.hosts))
    return s


class ServiceScraper:
    def __init__(
        self,
        nc: NATS,
        *,
        window_s: float = 0.3,
        cache_s: float = 2.0,
        kinds: tuple[str, ...] = (),
        hosts: Callable[[], Iterable[str]] = tuple,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.window_s = window_s
        self.cache_s = cache_s
        self.kinds = kinds
        self.hosts = hosts  # the hosts whose agents are asked (the gateway's directory)
        self.clock = clock
        self.scrapes = 0
        self.refused = 0  # replies that named another kind than the subject they answered
        self._text = ""
        self._at = float("-inf")
        self._lock = asyncio.Lock()
        self._seen: dict[Labels, float] = {}

    async def text(self) -> str:
        async with self._lock:  # concurrent scrapes wait for one gather instead of each sending one
            if self.clock() - self._at < self.cache_s:
                return self._text
            try:
                replies = await self.gather()
            except Exception as exc:  # NATS away: the rest of /metrics still answers
                log.warning("service stats scrape failed: %s", exc)
                replies = []
            self._text = self.render(replies)
            self._at = self.clock()
            return self._text

    async def gather(self) -> list[dict]:
        if not self.nc.is_connected:
            return []
        self.scrapes += 1
        replies: list[dict] = []
        inbox = self.nc.new_inbox()
        cut = len(inbox) + 1

        async def collect(msg) -> None:
            if len(replies) >= MAX_REPLIES:
                return
            try:
                obj = msgspec.json.decode(msg.data)
            except (msgspec.DecodeError, RecursionError):  # a reply nested past the depth limit
                return
            if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                r = self.attribute(msg.subject[cut:].split("."), obj)
                if r is not None:
                    replies.append(r)

        sub = await self.nc.subscribe(f"{inbox}.>", cb=collect)
        try:
            kinds = self.kinds or subjects.CENTRAL_KINDS + subjects.AGENT_KINDS
            for k in kinds:
                if k not in subjects.AGENT_KINDS:
                    await self.nc.publish(f"$SRV.STATS.{k}", b"", reply=f"{inbox}.c.{k}")
            agents = [k for k in kinds if k in subjects.AGENT_KINDS]
            for i, host in enumerate(list(self.hosts()) if agents else ()):
                if i and i % 1000 == 0:
                    await asyncio.sleep(0)  # a large fleet's requests do not hold the loop
                for k in agents:
                    try:
                        subject = subjects.service_stats(k, host)
                    except InvalidId:
                        break
                    await self.nc.publish(subject, b"", reply=f"{inbox}.a.{k}.{host}")
            await self.nc.flush()
            await asyncio.sleep(self.window_s)  # a scatter-gather has no last reply to wait for
        finally:
            await sub.unsubscribe()
        return replies

    def attribute(self, key: list[str], r: dict) -> dict | None:
        """The reply as it may be rendered, given the key of the subject it answered."""
        if len(key) == 2 and key[0] == "c":
            if r["name"] != key[1]:
                self.refused += 1
                return None
            return r
        if len(key) == 3 and key[0] == "a":
            meta = r.get("metadata")
            instance = meta.get("instance") if isinstance(meta, dict) else None
            # The agent names its own instance (within its own rows); kind and host are the asked ones.
            return {**r, "name": key[1], "metadata": {"instance": str(instance or "")[:200], "host": key[2]}}
        return None

    def render(self, replies: list[dict]) -> str:
        now = self.clock()
        fams: dict[str, tuple[str, str, list[str]]] = {}

        def add(name: str, type_: str, help_: str, labels: str, value: Any) -> None:
            fam = fams.setdefault(name, (type_, help_, []))
            fam[2].append(f"{name}{{{labels}}} {_num(value)}")

        up: set[Labels] = set()
        for r in replies:
            meta = r.get("metadata")
            if not isinstance(meta, dict):
                meta = {}
            key: Labels = (str(r["name"]), str(meta.get("instance") or r.get("id") or ""), str(meta.get("host") or ""))
            if key in up:
                continue  # the same instance answering twice (two requests): report it once
            up.add(key)
            base = f'service="{_esc(key[0])}",instance="{_esc(key[1])}",host="{_esc(key[2])}"'
            counters = None
            for ep in r.get("endpoints") or ():
                if not isinstance(ep, dict):
                    continue
                if ep.get("name") == STATS_ENDPOINT and ep.get("data"):
                    try:
                        counters = msgspec.convert(ep["data"], ServiceCounters)
                    except msgspec.ValidationError:
                        counters = None
                    continue  # the scrape's own endpoint is not the service's work
                el = f'{base},endpoint="{_esc(str(ep.get("name", "")))}"'
                add(
                    "fleetwatch_service_endpoint_requests_total",
                    "counter",
                    "requests an endpoint received",
                    el,
                    _int(ep.get("num_requests")),
                )
                add(
                    "fleetwatch_service_endpoint_errors_total",
                    "counter",
                    "requests an endpoint answered with an error",
                    el,
                    _int(ep.get("num_errors")),
                )
                add(
                    "fleetwatch_service_endpoint_processing_seconds_total",
                    "counter",
                    "time spent answering an endpoint's requests",
                    el,
                    _int(ep.get("processing_time")) / 1e9,
                )
                add(
                    "fleetwatch_service_endpoint_processing_seconds_avg",
                    "gauge",
                    "mean time to answer one request",
                    el,
                    _int(ep.get("average_processing_time")) / 1e9,
                )
            if counters is None:
                continue
            add(
                "fleetwatch_service_uptime_seconds",
                "gauge",
                "seconds since the service instance started",
                base,
                counters.uptime_s,
            )
            for k, n in sorted(counters.counters.items()):
                name = _NAME_RE.sub("_", k)
                add(
                    f"fleetwatch_service_{name}_total",
                    "counter",
                    f"{name.replace('_', ' ')} counted by the service",
                    base,
                    n,
                )
            for k, v in sorted(counters.gauges.items()):
                name = _NAME_RE.sub("_", k)
                if name not in _FIXED:
                    add(
                        f"fleetwatch_service_{name}",
                        "gauge",
                        f"{name.replace('_', ' ')} reported by the service",
                        base,
                        v,
                    )
            for k, v in sorted(counters.consumer_pending.items()):
                add(
                    "fleetwatch_service_consumer_pending",
                    "gauge",
                    "JetStream messages not yet delivered to the service's consumer",
                    f'{base},consumer="{_esc(k)}"',
                    v,
                )
            for k, v in sorted(counters.queues.items()):
                add(
                    "fleetwatch_service_queue_size",
                    "gauge",
                    "items waiting in a queue inside the service",
                    f'{base},queue="{_esc(k)}"',
                    v,
                )
        for key in up:
            self._seen[key] = now
        for key, at in list(self._seen.items()):
            if now - at > FORGET_S:
                del self._seen[key]
                continue
            s, i, h = (_esc(x) for x in key)
            add(
                "fleetwatch_service_up",
                "gauge",
                "1 when the service instance answered the last $SRV.STATS scrape",
                f'service="{s}",instance="{i}",host="{h}"',
                1 if key in up else 0,
            )
        out: list[str] = []
        for name in sorted(fams):
            type_, help_, lines = fams[name]
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {type_}", *lines]
        return "\n".join(out) + "\n" if out else ""


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0
