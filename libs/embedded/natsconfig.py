"""The nats-server config (`fleetwatch nats-config`, the dev stack, the tests): a config where each host's agents can touch only that
host's subjects, plus one identity per central service.

Inventory (TOML):

    [server]            # optional
    listen = "127.0.0.1:4222"
    store_dir = "/var/lib/nats"

    [[hosts]]
    id = "web-1"        # or hostname = "web-1.example.com" (dots become '-')

A cluster: list its nodes under `[server]`; one `nats-<name>.conf` per node is written (same
users, routes to every other node, a generated route password), instead of `nats.conf`:

    [server]
    cluster_name = "fleetwatch"
    [[server.nodes]]
    name = "nats-1"
    listen = "0.0.0.0:4222"
    cluster_listen = "0.0.0.0:6222"
    route = "nats-1:6222"        # how the other nodes reach this one
    store_dir = "/data/jetstream"

`--cluster N` writes N nodes on 127.0.0.1 instead (client ports from --listen's port upward).
TLS for clients: `tls_cert`, `tls_key`, `tls_ca` (and `tls_verify = true` to require client
certificates) under `[server]`, as written by `fleetwatch certs`.

Passwords are generated once and kept in `credentials.json` (0600) in the output directory;
running the command again keeps them and adds/removes users as the inventory changes.
"""

from __future__ import annotations

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
# Control requests (`fleet.ctl.<host>.*`) carry the caller's role, which the host's commander
# believes (services/commander/policy.py): only the gateway, which authenticated that caller, and
# the break-glass `admin` may send them. Every other central identity is denied the publish.
CTL_SENDERS = ("admin", "gateway")
# With registration on: the auth callout service's own login, and its issuer seed (no user).
CALLOUT_USER = "authcallout"
CALLOUT_SEED = "_callout_issuer_seed"


class InventoryHost(msgspec.Struct, kw_only=True, frozen=True):
    id: str = ""
    hostname: str = ""
    labels: dict[str, str] = {}

    @property
    def host_id(self) -> str:
        return check_host_id(self.id) if self.id else host_id_from_hostname(self.hostname)


class ClusterNode(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    listen: str  # client host:port
    cluster_listen: str  # route host:port this node listens on
    route: str = ""  # host:port the other nodes dial (default: cluster_listen)
    http: str = ""
    store_dir: str = ""


class ServerSection(msgspec.Struct, kw_only=True, frozen=True):
    listen: str = "127.0.0.1:4222"
    store_dir: str = ""
    http: str = ""  # monitoring endpoint, e.g. 127.0.0.1:8222
    server_name: str = "fleetwatch-1"
    max_file_store: str = "10G"
    max_memory_store: str = "512M"
    cluster_name: str = "fleetwatch"
    nodes: list[ClusterNode] = []
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_verify: bool = False  # require client certificates signed by tls_ca
    # Agent registration without restarting NATS: connections that match no user above are
    # decided by the auth callout service (services/authcallout) from the hosts registered
    # through the gateway. The issuer key is generated and kept in credentials.json.
    registration: bool = False
    # The URL clients use, written into every env file (FLEETWATCH_NATS_URL). Empty: derived
    # from the listen addresses (0.0.0.0 becomes 127.0.0.1), right for one machine only.
    client_url: str = ""


def client_url(server: ServerSection, listen: str | None = None) -> str:
    """FLEETWATCH_NATS_URL for this config: comma-separated node URLs for a cluster."""
    if server.client_url:
        return server.client_url
    scheme = "tls" if server.tls_cert else "nats"
    listens = [n.listen for n in server.nodes] if server.nodes else [listen or server.listen]
    urls = []
    for addr in listens:
        host, _, port = addr.rpartition(":")
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
        urls.append(f"{scheme}://{host}:{port}")
    return ",".join(urls)


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


def build_config(
    inv: Inventory, creds: dict[str, str], *, store_dir: str | None = None, listen: str | None = None
) -> dict:
    users: list[dict] = []  # a user with permissions is a nested mapping
    for name in CENTRAL_USERS:
        user: dict = {"user": name, "password": creds[name]}
        if name not in CTL_SENDERS:
            user["permissions"] = {"publish": {"deny": ["fleet.ctl.>"]}}
        users.append(user)
    for h in inv.hosts:
        u = agent_user(h.host_id)
        users.append({"user": u, "password": creds[u], "permissions": agent_permissions(h.host_id)})
    authorization: dict = {"users": users}
    if inv.server.registration:
        users.append({"user": CALLOUT_USER, "password": creds[CALLOUT_USER]})
        authorization["auth_callout"] = {
            "issuer": callout_issuer_public(creds[CALLOUT_SEED]),
            # Every configured user logs in as before; only unknown ones are called out.
            "auth_users": [u["user"] for u in users],
        }
    cfg: dict = {
        "server_name": inv.server.server_name,
        "listen": listen or inv.server.listen,
        "max_payload": 8 * 1024 * 1024,
        "jetstream": {
            "store_dir": store_dir or inv.server.store_dir or "./jetstream",
            "max_file_store": inv.server.max_file_store,
            "max_memory_store": inv.server.max_memory_store,
        },
        "authorization": authorization,
    }
    if inv.server.http:
        cfg["http"] = inv.server.http
    if inv.server.tls_cert:
        tls: dict = {"cert_file": inv.server.tls_cert, "key_file": inv.server.tls_key, "timeout": 5}
        if inv.server.tls_ca:
            tls["ca_file"] = inv.server.tls_ca
        if inv.server.tls_verify:
            tls["verify"] = True
        cfg["tls"] = tls
    return cfg


# Route (server-to-server) identity of a cluster; never a client user.
ROUTE_USER = "_route"


def build_node_config(inv: Inventory, creds: dict[str, str], node: ClusterNode) -> dict:
    """One cluster node: the single-server config plus routes to every other node."""
    cfg = build_config(inv, creds, store_dir=node.store_dir or None, listen=node.listen)
    cfg["server_name"] = node.name
    cfg.pop("http", None)
    if node.http:
        cfg["http"] = node.http
    pw = creds[ROUTE_USER]
    cfg["cluster"] = {
        "name": inv.server.cluster_name,
        "listen": node.cluster_listen,
        "authorization": {"user": "route", "password": pw, "timeout": 2},
        "routes": [
            f"nats-route://route:{pw}@{n.route or n.cluster_listen}" for n in inv.server.nodes if n.name != node.name
        ],
    }
    return cfg


def loopback_nodes(
    client_ports: list[int], cluster_ports: list[int], store_root: str, http_ports: list[int] | None = None
) -> list[ClusterNode]:
    """A cluster on 127.0.0.1 (tests, benches, `--cluster N`)."""
    return [
        ClusterNode(
            name=f"nats-{i + 1}",
            listen=f"127.0.0.1:{cp}",
            cluster_listen=f"127.0.0.1:{rp}",
            http=f"127.0.0.1:{http_ports[i]}" if http_ports else "",
            store_dir=f"{store_root}/nats-{i + 1}",
        )
        for i, (cp, rp) in enumerate(zip(client_ports, cluster_ports, strict=True))
    ]


def ensure_credentials(inv: Inventory, existing: dict[str, str]) -> dict[str, str]:
    wanted = list(CENTRAL_USERS) + [agent_user(h.host_id) for h in inv.hosts]
    if inv.server.nodes:
        wanted.append(ROUTE_USER)
    if inv.server.registration:
        wanted.append(CALLOUT_USER)
    out = {u: existing.get(u) or secrets.token_urlsafe(24) for u in wanted}
    if inv.server.registration:
        out[CALLOUT_SEED] = existing.get(CALLOUT_SEED) or new_account_seed()
    return out


def new_account_seed() -> str:
    import nkeys

    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_ACCOUNT).decode()


def callout_issuer_public(seed: str) -> str:
    import nkeys

    return nkeys.from_seed(seed.encode()).public_key.decode()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_config(
    inv: Inventory, out_dir: Path, *, store_dir: str | None = None, listen: str | None = None
) -> dict[str, str]:
    """Write nats.conf, credentials.json and one env file per identity; returns the credentials."""
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)  # every file here is a credential: a job's unprivileged user lists none
    creds_path = out_dir / "credentials.json"
    existing = json.loads(creds_path.read_text()) if creds_path.exists() else {}
    creds = ensure_credentials(inv, existing)
    # nats-server's config parser accepts JSON.
    if inv.server.nodes:
        for node in inv.server.nodes:
            _write_private(
                out_dir / f"nats-{node.name.removeprefix('nats-')}.conf",
                json.dumps(build_node_config(inv, creds, node), indent=2) + "\n",
            )
    else:
        cfg = build_config(inv, creds, store_dir=store_dir, listen=listen)
        _write_private(out_dir / "nats.conf", json.dumps(cfg, indent=2) + "\n")
    _write_private(creds_path, json.dumps(creds, indent=2) + "\n")
    env_dir = out_dir / "env"
    env_dir.mkdir(exist_ok=True)
    os.chmod(env_dir, 0o700)
    hosts = {agent_user(h.host_id): h.host_id for h in inv.hosts}
    url = client_url(inv.server, listen)
    for user, pw in creds.items():
        if user in (ROUTE_USER, CALLOUT_SEED):
            continue
        lines = [f"FLEETWATCH_NATS_URL={url}", f"FLEETWATCH_NATS_USER={user}", f"FLEETWATCH_NATS_PASSWORD={pw}"]
        if user in hosts:
            lines.append(f"FLEETWATCH_NATS_INBOX_PREFIX={subjects.inbox_prefix(hosts[user])}")
            lines.append(f"FLEETWATCH_HOST_ID={hosts[user]}")
        if user == CALLOUT_USER:
            lines.append(f"FLEETWATCH_AUTHCALLOUT_ISSUER_SEED={creds[CALLOUT_SEED]}")
        _write_private(env_dir / f"{user}.env", "\n".join(lines) + "\n")
    return creds
