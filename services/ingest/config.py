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
    fetch_timeout: float = 1.0
    metrics_writers: int = 3  # concurrent transactions for METRICS, each on its own connection
    streams: list[str] = msgspec.field(default_factory=lambda: ["metrics", "events", "audit"])
    keepalive: float = 10.0  # seconds between "still working" signals while the DB is away
    last_seen_every: float = 30.0  # hosts.last_seen is refreshed at most this often per host (a write per host)
    future_tolerance: float = 86400.0  # samples further in the future are dead-lettered
    maintenance_interval: float = 3600.0
    events_retention_days: int = 90  # app_events, health_results, alert_events, replica_status
    migrate: bool = True

    def __post_init__(self) -> None:
        if self.storage not in ("auto", "timescaledb", "partitions"):
            raise ValueError("storage must be auto, timescaledb or partitions")
        if self.batch < 1 or self.metrics_writers < 1:
            raise ValueError("batch and metrics_writers must be >= 1")
        unknown = set(self.streams) - {"metrics", "events", "audit"}
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}")
