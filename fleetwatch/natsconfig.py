"""`fleetwatch nats-config`: write the nats-server config and per-host credentials from an
inventory. What the config contains is libs.embedded.natsconfig (the dev stack and the tests
build theirs with it too); this module is only the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from libs.embedded.natsconfig import CALLOUT_SEED, ROUTE_USER, load_inventory, loopback_nodes, write_config


def _cmd(args: argparse.Namespace) -> int:
    inv = load_inventory(Path(args.inventory))
    if args.cluster:
        if args.cluster < 2:
            print("error: --cluster needs at least 2 nodes", file=sys.stderr)
            return 2
        host, _, port = (args.listen or inv.server.listen).rpartition(":")
        base = int(port)
        store = args.store_dir or inv.server.store_dir or "./jetstream"
        nodes = loopback_nodes([base + i for i in range(args.cluster)], [6222 + i for i in range(args.cluster)], store)
        inv = msgspec.structs.replace(inv, server=msgspec.structs.replace(inv.server, nodes=nodes))
    creds = write_config(inv, Path(args.out), store_dir=args.store_dir, listen=args.listen)
    users = len([u for u in creds if u not in (ROUTE_USER, CALLOUT_SEED)])
    what = f"{len(inv.server.nodes)} node configs" if inv.server.nodes else str(Path(args.out) / "nats.conf")
    print(f"wrote {what} with {users} users ({len(inv.hosts)} host agents)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nats-config", help="generate the nats-server config and per-host credentials from an inventory")
    p.add_argument("--inventory", required=True, help="inventory TOML file")
    p.add_argument("--out", default="nats", help="output directory (default: ./nats)")
    p.add_argument("--store-dir", default=None, help="JetStream store directory")
    p.add_argument("--listen", default=None, help="host:port to listen on")
    p.add_argument(
        "--cluster", type=int, default=0, metavar="N", help="write N cluster node configs on 127.0.0.1 (nats-1.conf …)"
    )
    p.set_defaults(func=_cmd)
