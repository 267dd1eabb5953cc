"""What each service reports about itself in `$SRV.STATS` (NATS micro): the `data` of its
`stats` endpoint, which a request on that endpoint's subject (fleet.svc.<kind>.<id>) answers
with the instance's whole micro STATS document."""

from __future__ import annotations

from .base import Message


class ServiceCounters(Message, kw_only=True, frozen=True):
    kind: str  # the micro service name: collector, ingest, commander, ...
    instance: str  # <machine>:<pid>, stable for the life of the process
    host: str = ""  # the fleet host id of an agent; "" for central services
    ts: float = 0.0
    uptime_s: float = 0.0
    # Only ever grow while the process lives: messages_in, messages_out, errors, dead_letters, ...
    counters: dict[str, int] = {}
    # Values of the moment: stream clients, buffered frames, ...
    gauges: dict[str, float] = {}
    # JetStream consumer name -> messages not yet delivered to it (consumer lag).
    consumer_pending: dict[str, int] = {}
    # In-process queue or buffer name -> items waiting in it.
    queues: dict[str, int] = {}
