"""What every fleetwatch service shares: settings, NATS, logging, shutdown, JetStream provisioning."""

from .logs import mask_mapping, redact, register_secret, setup_logging
from .natsconn import connect
from .service import Service, open_nats, run, serve
from .settings import DbSettings, HostSettings, LogSettings, NatsSettings, SettingsError, load_settings

__all__ = [
    "DbSettings",
    "HostSettings",
    "LogSettings",
    "NatsSettings",
    "Service",
    "SettingsError",
    "connect",
    "load_settings",
    "mask_mapping",
    "open_nats",
    "redact",
    "register_secret",
    "run",
    "serve",
    "setup_logging",
]
