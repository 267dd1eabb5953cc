"""Ingest settings: FLEETWATCH_INGEST_* (plus the shared NATS/DB/log areas)."""

from __future__ import annotations

import msgspec

from libs.runtime import DbSettings, LogSettings, NatsSettings


class IngestConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    db: DbSettings = DbSettings()
    log: LogSettings = LogSettings()
    storage: str = "auto"  # auto | timescaledb | partitions; decided once, at the first migration
    batch: int = 2000  # messages per fetch (and per transaction)
    fetch_timeout: float = 0.25  # the longest a fetch waits for a full batch (a live trickle comes in this often)
    metrics_writers: int = 3  # concurrent transactions for METRICS, each on its own connection
    streams: list[str] = msgspec.field(default_factory=lambda: ["metrics", "events", "central", "audit"])
    keepalive: float = 10.0  # seconds between "still working" signals while the DB is away
    # Seconds JetStream waits for an ack before redelivering (to any process); ingest sets its
    # consumers to it at start. Longer than keepalive, so a held batch is never handed over.
    ack_wait: float = 30.0
    last_seen_every: float = 30.0  # hosts.last_seen is refreshed at most this often per host (a write per host)
    future_tolerance: float = 86400.0  # samples further in the future are dead-lettered
    maintenance_interval: float = 3600.0
    jobs_check_interval: float = 300.0  # seconds between reads of TimescaleDB's job stats
    rollup_every: float = 5.0  # plain path: seconds between folds of rollup_pending into metrics_1m/1h
    events_retention_days: int = 90  # app_events, health_results, alert_events, replica_status
    migrate: bool = True

    def __post_init__(self) -> None:
        if self.storage not in ("auto", "timescaledb", "partitions"):
            raise ValueError("storage must be auto, timescaledb or partitions")
        if self.batch < 1 or self.metrics_writers < 1:
            raise ValueError("batch and metrics_writers must be >= 1")
        if not self.rollup_every > 0:
            raise ValueError("rollup_every must be > 0")
        if not 0 < self.keepalive < self.ack_wait:
            raise ValueError("keepalive must be > 0 and shorter than ack_wait")
        unknown = set(self.streams) - {"metrics", "events", "central", "audit"}
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}")
