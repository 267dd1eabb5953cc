"""What every fleetwatch service shares: settings, NATS, logging, shutdown, JetStream provisioning, service stats."""

from .logs import mask_mapping, redact, register_secret, setup_logging
from .natsconn import connect
from .service import Service, open_nats, open_stats, run, serve
from .settings import DbSettings, HostSettings, LogSettings, NatsSettings, SettingsError, load_settings
from .stats import ServiceStats, StatsService

__all__ = [
    "DbSettings",
    "HostSettings",
    "LogSettings",
    "NatsSettings",
    "Service",
    "ServiceStats",
    "StatsService",
    "SettingsError",
    "connect",
    "load_settings",
    "mask_mapping",
    "open_nats",
    "open_stats",
    "redact",
    "register_secret",
    "run",
    "serve",
    "setup_logging",
]
