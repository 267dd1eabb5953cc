"""A nats-server cluster on 127.0.0.1 with fleetwatch's generated auth: what the cluster tests and
the fault bench start. The configs come from `fleetwatch nats-config` (one file per node)."""

from __future__ import annotations

from pathlib import Path

from libs.embedded import natsconfig
from libs.runtime.settings import NatsSettings
from libs.schemas import subjects

from .natsserver import NatsServer, free_port, wait_port


class NatsCluster:
    def __init__(self, root: Path, hosts: list[str], size: int = 3) -> None:
        self.root = Path(root)
        self.hosts = list(hosts)
        ports = [free_port() for _ in range(size)]
        routes = [free_port() for _ in range(size)]
        nodes = natsconfig.loopback_nodes(ports, routes, str(self.root / "jetstream"))
        server = natsconfig.ServerSection(cluster_name="fleetwatch-test", nodes=nodes)
        inv = natsconfig.Inventory(server=server, hosts=[natsconfig.InventoryHost(id=h) for h in self.hosts])
        self.creds = natsconfig.write_config(inv, self.root / "nats")
        self.nodes = [
            NatsServer(self.root / "nats" / f"{n.name}.conf", p, log_file=self.root / f"{n.name}.log")
            for n, p in zip(nodes, ports, strict=True)
        ]

    @property
    def url(self) -> str:
        """Every node, comma-separated (FLEETWATCH_NATS_URL accepts a list)."""
        return ",".join(n.url for n in self.nodes)

    def settings(self, user: str = "admin") -> NatsSettings:
        return NatsSettings(url=self.url, user=user, password=self.creds[user], reconnect_wait=0.2)

    def agent_settings(self, host: str) -> NatsSettings:
        u = natsconfig.agent_user(host)
        return NatsSettings(
            url=self.url, user=u, password=self.creds[u], inbox_prefix=subjects.inbox_prefix(host), reconnect_wait=0.2
        )

    def env(self, user: str = "admin", host: str | None = None) -> dict[str, str]:
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

    def start(self, timeout: float = 20.0) -> NatsCluster:
        # Start all before waiting: each node keeps retrying its routes until the others listen.
        procs = [n.launch() for n in self.nodes]
        for n, proc in zip(self.nodes, procs, strict=True):
            wait_port("127.0.0.1", n.port, timeout, proc)
        return self

    def restart(self, index: int) -> None:
        self.nodes[index].start()

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
