"""The operator commands of `fleetwatch`, over the gateway's API (like supervisorctl, pm2 and the
nats CLI over theirs). One module per command group; this package registers them in the order
the help lists them, ahead of the dev and maintenance commands (ORDER)."""

from __future__ import annotations

import argparse
import importlib

ORDER = 0
MODULES = ("auth", "hosts", "top", "apps", "jobs", "alerting", "users", "sync", "audit", "completion")


def register(sub: argparse._SubParsersAction) -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
