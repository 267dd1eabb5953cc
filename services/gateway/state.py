"""Everything the controllers use, opened in the app's lifespan and injected (no globals)."""

from __future__ import annotations

import time

import asyncpg
from litestar.di import NamedDependency
from nats.aio.client import Client as NATS

from .authn import Authenticator, LoginLimiter
from .config import GatewayConfig
from .directory import Directory
from .hub import Hub
from .looplag import LoopLag
from .passwords import Hasher
from .prometheus.remote import Receiver
from .promstats import RequestStats
from .servicestats import ServiceScraper
from .tokens import Signer


class Gateway:
    def __init__(self, config: GatewayConfig, nc: NATS, pool: asyncpg.Pool) -> None:
        self.config = config
        self.nc = nc
        self.pool = pool
        self.signer = Signer(config.secret_key)
        self.hasher = Hasher(config.hash_rounds)
        self.auth = Authenticator(pool, self.signer, config.auth_cache_s)
        self.limiter = LoginLimiter(config.login_max_failures, config.login_window_s)
        self.directory = Directory(config.offline_after_s)
        self.hub = Hub(
            max_clients=config.stream_max_clients,
            queue_size=config.stream_queue_size,
            buffer_size=config.stream_buffer_size,
            heartbeat_s=config.stream_heartbeat_s,
            batch_s=config.stream_batch_s,
        )
        self.stats = RequestStats()
        self.loop_lag = LoopLag(config.loop_lag_interval_s)
        self.remote = Receiver(pool, self.directory, config.remote_write_allow)
        self.started = time.time()
        self.logins_ok = 0
        self.logins_failed = 0
        self.logins_limited = 0
        self.services: ServiceScraper | None = None  # set once NATS is open (app lifespan)


# How controllers ask for it: `gw: GatewayDep` (injected by name, see app.py).
GatewayDep = NamedDependency[Gateway]
