"""Raw JetStream messages -> writer Items, or a reason to dead-letter them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from libs.schemas import (
    AlertEvent,
    AppStatus,
    AuditRecord,
    Codec,
    DecodeError,
    HealthResult,
    HostInfo,
    MetricFrame,
    ProcessSnapshot,
    ReplicationStatus,
)
from libs.schemas.subjects import token

from . import rows
from .writer import Item

FRAME = Codec(MetricFrame)
SNAPSHOT = Codec(ProcessSnapshot)
HOSTINFO = Codec(HostInfo)

# EVENTS, CENTRAL and AUDIT subjects: second token -> (codec, table, row function, attribute that
# must match the host token of the subject, if any: what a host publishes speaks for that host only).
EVENT_KINDS: dict[str, tuple[Codec, str, Callable[[Any], tuple], str | None]] = {
    "apps": (Codec(AppStatus), "app_events", rows.app_row, "host"),
    "health": (Codec(HealthResult), "health_results", rows.health_row, None),
    "alerts": (Codec(AlertEvent), "alert_events", rows.alert_row, None),
    "replica": (Codec(ReplicationStatus), "replica_status", rows.replica_row, "host"),
    "audit": (Codec(AuditRecord), "audit_log", rows.audit_row, "host"),
}


class Rejected(Exception):
    """The message cannot be stored; the reason goes to the dead-letter headers."""


class Skip(Exception):
    """Nothing to store, nothing wrong (too old to keep, a subject ingest does not store)."""


class Decoder:
    def __init__(self, raw_retention_s: float, future_tolerance_s: float = 86400.0) -> None:
        self.raw_retention_s = raw_retention_s
        self.future_tolerance_s = future_tolerance_s

    def _time(self, value: float, *, raw: bool) -> datetime:
        if not math.isfinite(value):
            raise Rejected(f"timestamp {value!r} is not a number")
        now = time.time()
        if value > now + self.future_tolerance_s:
            raise Rejected(f"timestamp {value} is more than {self.future_tolerance_s:.0f}s in the future")
        if raw and value < now - self.raw_retention_s:
            raise Skip("older than raw retention")
        try:
            return rows.ts(value)
        except (ValueError, OverflowError, OSError) as exc:
            raise Rejected(f"timestamp {value!r} out of range: {exc}") from None

    @staticmethod
    def _host(subject: str, host: str) -> None:
        if token(subject, 2) != host:
            raise Rejected(f"host {host!r} in the payload does not match the subject {subject!r}")

    def metrics(self, msg) -> Item:
        kind = token(msg.subject, 1)
        if kind == "metrics":
            f = FRAME.decode(msg.data)
            self._host(msg.subject, f.host)
            return Item(msg, "metrics", f, self._time(f.ts, raw=True))
        if kind == "procs":
            s = SNAPSHOT.decode(msg.data)
            self._host(msg.subject, s.host)
            for p in s.procs:
                if p.create_time and not math.isfinite(p.create_time):
                    raise Rejected("process create_time is not a number")
            return Item(msg, "proc_samples", s, self._time(s.ts, raw=True))
        if kind == "hosts":
            h = HOSTINFO.decode(msg.data)
            self._host(msg.subject, h.host)
            t = self._time(h.ts, raw=False)
            try:
                rows.host_row(h)
            except (ValueError, OverflowError, OSError) as exc:
                raise Rejected(f"host info out of range: {exc}") from None
            return Item(msg, "hosts", h, t)
        raise Skip(f"subject {msg.subject} is not stored by ingest")

    def events(self, msg) -> Item:
        kind = token(msg.subject, 1)
        spec = EVENT_KINDS.get(kind)
        if spec is None:
            raise Skip(f"subject {msg.subject} is not stored by ingest")  # e.g. fleet.users.changed
        codec, table, row, host_attr = spec
        obj = codec.decode(msg.data)
        if host_attr is not None:
            self._host(msg.subject, getattr(obj, host_attr))
        t = self._time(obj.ts, raw=False)
        try:
            value = row(obj)
        except (ValueError, OverflowError, OSError) as exc:
            raise Rejected(f"value out of range: {exc}") from None
        return Item(msg, table, value, t)


__all__ = ["DecodeError", "Decoder", "Rejected", "Skip"]
