"""A NATS server with fleetwatch's generated auth, and a PostgreSQL cluster, in one directory:
what the tests and benchmarks start (the dev stack uses the same pieces under fleetwatch.supervise)."""

from __future__ import annotations

import os
from pathlib import Path

from libs.embedded import natsconfig
from libs.runtime.settings import NatsSettings
from libs.schemas import subjects

from .natsserver import NatsServer, free_port
from .postgres import PostgresCluster


class NatsStack:
    def __init__(self, root: Path, hosts: list[str], port: int | None = None) -> None:
        self.root = Path(root)
        self.hosts = list(hosts)
        self.port = port or free_port()
        inv = natsconfig.Inventory(hosts=[natsconfig.InventoryHost(id=h) for h in self.hosts])
        self.creds = natsconfig.write_config(
            inv, self.root / "nats", store_dir=str(self.root / "jetstream"), listen=f"127.0.0.1:{self.port}"
        )
        self.server = NatsServer(self.root / "nats" / "nats.conf", self.port, log_file=self.root / "nats.log")

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, user: str = "admin") -> NatsSettings:
        return NatsSettings(url=self.url, user=user, password=self.creds[user], reconnect_wait=0.2)

    def agent_settings(self, host: str) -> NatsSettings:
        return NatsSettings(
            url=self.url,
            user=natsconfig.agent_user(host),
            password=self.creds[natsconfig.agent_user(host)],
            inbox_prefix=subjects.inbox_prefix(host),
            reconnect_wait=0.2,
        )

    def env(self, user: str = "admin", host: str | None = None) -> dict[str, str]:
        """FLEETWATCH_NATS_* for a service subprocess."""
        s = self.agent_settings(host) if host else self.settings(user)
        env = {
            "FLEETWATCH_NATS_URL": s.url,
            "FLEETWATCH_NATS_USER": s.user,
            "FLEETWATCH_NATS_PASSWORD": s.password,
            "FLEETWATCH_NATS_RECONNECT_WAIT": "0.2",
        }
        if host:
            env["FLEETWATCH_NATS_INBOX_PREFIX"] = s.inbox_prefix
            env["FLEETWATCH_HOST_ID"] = host
        return env

    def start(self) -> NatsStack:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        self.server.kill()


def make_private_dir(base: str = "/tmp", prefix: str = "fleetwatch-") -> Path:
    """A temp dir the postgres account can traverse (pytest's own tmp dirs are 0700 root)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    os.chmod(d, 0o755)
    return d


# Settings that make a throwaway test cluster fast; durability is not what tests measure.
TEST_PG_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "256MB",
}


def start_postgres(root: Path, settings: dict[str, str] | None = None) -> PostgresCluster:
    pg = PostgresCluster(
        Path(root) / "pg",
        free_port(),
        settings=settings if settings is not None else TEST_PG_SETTINGS,
        log_file=Path(root) / "pg.log",
    )
    pg.start()
    return pg
