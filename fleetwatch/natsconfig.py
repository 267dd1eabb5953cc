"""`fleetwatch nats-config`: a nats-server config where each host's agents can touch only that
host's subjects, plus one identity per central service.

Inventory (TOML):

    [server]            # optional
    listen = "127.0.0.1:4222"
    store_dir = "/var/lib/nats"

    [[hosts]]
    id = "web-1"        # or hostname = "web-1.example.com" (dots become '-')

Passwords are generated once and kept in `credentials.json` (0600) in the output directory;
running the command again keeps them and adds/removes users as the inventory changes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tomllib
from pathlib import Path

import msgspec

from libs.schemas import subjects
from libs.schemas.ids import check_host_id, host_id_from_hostname

# Central services: one identity each, so one can be revoked without touching the others.
CENTRAL_USERS = ("admin", "ingest", "alerter", "gateway", "simulator")


class InventoryHost(msgspec.Struct, kw_only=True, frozen=True):
    id: str = ""
    hostname: str = ""
    labels: dict[str, str] = {}

    @property
    def host_id(self) -> str:
        return check_host_id(self.id) if self.id else host_id_from_hostname(self.hostname)


class ServerSection(msgspec.Struct, kw_only=True, frozen=True):
    listen: str = "127.0.0.1:4222"
    store_dir: str = ""
    http: str = ""  # monitoring endpoint, e.g. 127.0.0.1:8222
    server_name: str = "fleetwatch-1"
    max_file_store: str = "10G"
    max_memory_store: str = "512M"


class Inventory(msgspec.Struct, kw_only=True, frozen=True):
    server: ServerSection = ServerSection()
    hosts: list[InventoryHost] = []


def load_inventory(path: Path) -> Inventory:
    with open(path, "rb") as f:
        return msgspec.convert(tomllib.load(f), Inventory)


def agent_user(host: str) -> str:
    return f"agent-{check_host_id(host)}"


def agent_permissions(host: str) -> dict:
    return {
        "publish": {"allow": subjects.host_subjects_publish(host)},
        "subscribe": {"allow": subjects.host_subjects_subscribe(host)},
        # Replies to requests (control, sample, micro discovery) without a blanket publish grant.
        "allow_responses": {"max": 1, "expires": "5m"},
    }


def build_config(inv: Inventory, creds: dict[str, str], *, store_dir: str | None = None, listen: str | None = None) -> dict:
    users = []
    for name in CENTRAL_USERS:
        users.append({"user": name, "password": creds[name]})
    for h in inv.hosts:
        u = agent_user(h.host_id)
        users.append({"user": u, "password": creds[u], "permissions": agent_permissions(h.host_id)})
    cfg: dict = {
        "server_name": inv.server.server_name,
        "listen": listen or inv.server.listen,
        "max_payload": 8 * 1024 * 1024,
        "jetstream": {
            "store_dir": store_dir or inv.server.store_dir or "./jetstream",
            "max_file_store": inv.server.max_file_store,
            "max_memory_store": inv.server.max_memory_store,
        },
        "authorization": {"users": users},
    }
    if inv.server.http:
        cfg["http"] = inv.server.http
    return cfg


def ensure_credentials(inv: Inventory, existing: dict[str, str]) -> dict[str, str]:
    wanted = list(CENTRAL_USERS) + [agent_user(h.host_id) for h in inv.hosts]
    return {u: existing.get(u) or secrets.token_urlsafe(24) for u in wanted}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_config(inv: Inventory, out_dir: Path, *, store_dir: str | None = None, listen: str | None = None) -> dict[str, str]:
    """Write nats.conf, credentials.json and one env file per identity; returns the credentials."""
    out_dir.mkdir(parents=True, exist_ok=True)
    creds_path = out_dir / "credentials.json"
    existing = json.loads(creds_path.read_text()) if creds_path.exists() else {}
    creds = ensure_credentials(inv, existing)
    cfg = build_config(inv, creds, store_dir=store_dir, listen=listen)
    # nats-server's config parser accepts JSON.
    _write_private(out_dir / "nats.conf", json.dumps(cfg, indent=2) + "\n")
    _write_private(creds_path, json.dumps(creds, indent=2) + "\n")
    env_dir = out_dir / "env"
    env_dir.mkdir(exist_ok=True)
    hosts = {agent_user(h.host_id): h.host_id for h in inv.hosts}
    for user, pw in creds.items():
        lines = [f"FLEETWATCH_NATS_USER={user}", f"FLEETWATCH_NATS_PASSWORD={pw}"]
        if user in hosts:
            lines.append(f"FLEETWATCH_NATS_INBOX_PREFIX={subjects.inbox_prefix(hosts[user])}")
            lines.append(f"FLEETWATCH_HOST_ID={hosts[user]}")
        _write_private(env_dir / f"{user}.env", "\n".join(lines) + "\n")
    return creds


def _cmd(args: argparse.Namespace) -> int:
    inv = load_inventory(Path(args.inventory))
    creds = write_config(inv, Path(args.out), store_dir=args.store_dir, listen=args.listen)
    print(f"wrote {Path(args.out) / 'nats.conf'} with {len(creds)} users ({len(inv.hosts)} host agents)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nats-config", help="generate the nats-server config and per-host credentials from an inventory")
    p.add_argument("--inventory", required=True, help="inventory TOML file")
    p.add_argument("--out", default="nats", help="output directory (default: ./nats)")
    p.add_argument("--store-dir", default=None, help="JetStream store directory")
    p.add_argument("--listen", default=None, help="host:port to listen on")
    p.set_defaults(func=_cmd)
