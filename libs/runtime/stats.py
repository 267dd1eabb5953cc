"""Service stats: the counters a service owns, reported through NATS micro discovery.

Every service registers a micro service named for its kind (`ingest`, `collector`, ...), so
`$SRV.PING|INFO|STATS[.<kind>]` answer for it. Its counters travel the micro way: in the
`data` of its `stats` endpoint (ServiceCounters). That endpoint also answers a direct request on
`fleet.svc.<kind>.<instance>` with the same document `$SRV.STATS` gives for this instance. An
agent's instance token is its host, and only that host's agents may subscribe there, so the
gateway gathers agents from those subjects (anyone on the fleet can answer `$SRV.STATS.<agent
kind>`, in any name) and central services from `$SRV.STATS.<kind>`, for `/metrics`.

Counters a service already keeps elsewhere (an outbox's `published`) are read by callbacks at
report time instead of being counted twice; a callback that fails is left out of that report.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import nats.micro
from nats.aio.client import Client as NATS
from nats.micro.request import Request
from nats.micro.service import EndpointStats, ServiceConfig

from libs.schemas import Codec, subjects
from libs.schemas.ids import check_name
from libs.schemas.servicestats import ServiceCounters

log = logging.getLogger("fleetwatch.stats")

COUNTERS = Codec(ServiceCounters)
STATS_ENDPOINT = "stats"
VERSION = "0.1.0"

Number = int | float

# Which ServiceCounters field a read value goes into.
Area = Literal["counters", "gauges", "queues", "consumer_pending"]


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ServiceStats:
    """Counters (only grow) and gauges (read when reported) of one service instance."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self._reads: list[tuple[Area, str, Callable[[], Any]]] = []
        self.started = time.time()

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def counter(self, name: str, read: Callable[[], int]) -> None:
        """A counter kept elsewhere (e.g. `outbox.published`), read when reported."""
        self._reads.append(("counters", name, read))

    def gauge(self, name: str, read: Callable[[], Number | None]) -> None:
        """A value of the moment; None when there is none yet (left out of that report)."""
        self._reads.append(("gauges", name, read))

    def queue(self, name: str, read: Callable[[], int]) -> None:
        """Items waiting in an in-process queue or buffer."""
        self._reads.append(("queues", name, read))

    def pending(self, read: Callable[[], dict[str, int]]) -> None:
        """JetStream consumer name -> messages not yet delivered (consumer lag)."""
        self._reads.append(("consumer_pending", "", read))

    def snapshot(self, kind: str, instance: str, host: str = "") -> ServiceCounters:
        counters: dict[str, int] = dict(self.counters)
        gauges: dict[str, float] = {}
        queues: dict[str, int] = {}
        pending: dict[str, int] = {}
        for area, name, read in self._reads:
            try:
                value = read()
            except Exception as exc:  # a report without this value beats no report
                log.debug("stats read %s/%s failed: %s", area, name, exc)
                continue
            if value is None:
                continue
            if area == "consumer_pending":
                pending.update({str(k): int(v) for k, v in value.items()})
            elif area == "counters":
                counters[name] = counters.get(name, 0) + int(value)
            elif area == "gauges":
                gauges[name] = value
            else:
                queues[name] = value
        now = time.time()
        return ServiceCounters(
            kind=kind,
            instance=instance,
            host=host,
            ts=now,
            uptime_s=round(now - self.started, 3),
            counters=counters,
            gauges=gauges,
            consumer_pending=pending,
            queues=queues,
        )


class StatsService:
    """The micro service of one service instance: discovery plus the `stats` endpoint.

    A service with its own endpoints (the commander) adds them to `.service` after `start()`.
    """

    def __init__(
        self, nc: NATS, kind: str, stats: ServiceStats, *, host: str = "", version: str = VERSION, description: str = ""
    ) -> None:
        self.nc = nc
        self.kind = check_name(kind, "service kind")
        self.stats = stats
        self.host = host
        self.instance = instance_name()
        self.version = version
        self.description = description or f"fleetwatch {kind}"
        self.service: nats.micro.Service | None = None

    def report(self) -> ServiceCounters:
        return self.stats.snapshot(self.kind, self.instance, self.host)

    def _endpoint_data(self, ep: EndpointStats) -> Any:
        # micro asks for `data` endpoint by endpoint: the counters ride on ours only.
        if ep.name != STATS_ENDPOINT:
            return None
        return msgspec.to_builtins(self.report())

    async def start(self) -> nats.micro.Service:
        if self.service is not None:
            return self.service
        metadata = {"instance": self.instance}
        if self.host:
            metadata["host"] = self.host
        config = ServiceConfig(
            name=self.kind,
            version=self.version,
            description=self.description,
            metadata=metadata,
            stats_handler=self._endpoint_data,
        )
        svc = await nats.micro.add_service(self.nc, config)
        token = self.host or svc.id
        await svc.add_endpoint(
            name=STATS_ENDPOINT,
            subject=subjects.service_stats(self.kind, token),
            handler=self._answer,
            metadata={"schema": "ServiceCounters"},
        )
        self.service = svc
        return svc

    async def _answer(self, req: Request) -> None:
        # The micro STATS document of this instance (endpoint stats included, the counters in
        # the stats endpoint's data): what the gateway renders, asked where only this answers.
        svc = self.service
        if svc is None:
            await req.respond(b"{}")
            return
        await req.respond(msgspec.json.encode(svc.stats().to_dict()))

    async def stop(self) -> None:
        svc, self.service = self.service, None
        if svc is not None and not self.nc.is_closed:
            try:
                await svc.stop()
            except Exception as exc:  # shutting down anyway; the server forgets the subscriptions
                log.debug("micro service stop: %s", exc)
