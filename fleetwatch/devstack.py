"""`fleetwatch dev` (what `make run` calls): the whole system on this machine.

State lives under `.fleetwatch/`: ports, NATS config and credentials, the JetStream store, the
PostgreSQL cluster and the generated admin password. A second run reuses all of it. honcho runs
every process with prefixed output; Ctrl-C stops them all.

NATS runs as in production: the inventory's hosts log in as static users, and a host an admin
registers through the gateway (`POST /api/v1/hosts`) is let in by the authcallout service.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from libs.embedded import NatsServer, PostgresCluster, free_port, natsconfig
from libs.embedded.postgres import PostgresMissing, find_pg_bindir, pg_can_reach
from libs.schemas.ids import host_id_from_hostname

# Start order (honcho starts them together; services wait for their dependencies themselves).
SERVICES = ("authcallout", "ingest", "collector", "commander", "replicator", "alerter", "gateway")
AGENTS = {"collector", "commander", "replicator"}
CENTRAL_DB = "fleetwatch"
LOCAL_DB = "fleetwatch_local"  # the replicator's per-host copy; same cluster on one machine


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class DevState:
    """Everything `make run` keeps between runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.file = root / "stack.json"
        self.data = json.loads(self.file.read_text()) if self.file.exists() else {}

    def port(self, name: str, preferred: int) -> int:
        if name not in self.data:
            self.data[name] = preferred if _port_free(preferred) else free_port()
            self.save()
        return self.data[name]

    def save(self) -> None:
        self.file.write_text(json.dumps(self.data, indent=2) + "\n")

    def secret(self, name: str) -> str:
        p = self.root / name
        if not p.exists():
            p.write_text(secrets.token_urlsafe(18) + "\n")
        os.chmod(p, 0o600)
        return p.read_text().strip()

    @property
    def host_id(self) -> str:
        if "host_id" not in self.data:
            self.data["host_id"] = host_id_from_hostname(socket.gethostname())
            self.save()
        return self.data["host_id"]

    def pg_dir(self) -> Path:
        """`.fleetwatch/pg`, unless the postgres account cannot reach it (a checkout under /root):
        then a private directory under /var/lib/fleetwatch, linked from `.fleetwatch/pg`."""
        link = self.root / "pg"
        if link.is_symlink() or (link / "PG_VERSION").exists():
            return link.resolve()
        if pg_can_reach(self.root):
            return link
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        alt = Path("/var/lib/fleetwatch") / f"pg-{digest}"
        alt.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(alt.parent, 0o755)
        link.symlink_to(alt)
        return alt


def ensure_postgres_installed() -> None:
    """`make run` installs Debian's postgresql first (infra/scripts/system-deps.sh); say what is missing otherwise."""
    try:
        find_pg_bindir()
    except PostgresMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def prepare(state: DevState, callout_ttl: float = 30.0) -> dict:
    """Write configs, initialise the database cluster; returns what the processes need."""
    host = state.host_id
    nats_port = state.port("nats_port", 4222)
    pg_port = state.port("pg_port", 15432)
    gw_port = state.port("gateway_port", 8080)
    inv_path = state.root / "inventory.toml"
    if not inv_path.exists():
        inv_path.write_text(f'# hosts whose agents may connect to the dev NATS server\n[[hosts]]\nid = "{host}"\n')
    inv = natsconfig.load_inventory(inv_path)
    # Registration on, whatever an older state dir's inventory says (the same nats.conf as production).
    inv = msgspec.structs.replace(inv, server=msgspec.structs.replace(inv.server, registration=True))
    creds = natsconfig.write_config(
        inv, state.root / "nats", store_dir=str(state.root / "jetstream"), listen=f"127.0.0.1:{nats_port}"
    )
    ensure_postgres_installed()
    pg = PostgresCluster(state.pg_dir(), pg_port, password_file=state.root / "pg-password")
    pg.init()
    return {
        "host": host,
        "nats_port": nats_port,
        "pg_port": pg_port,
        "gateway_port": gw_port,
        "creds": creds,
        "pg": pg,
        "callout_ttl": callout_ttl,
    }


def service_env(state: DevState, ctx: dict, service: str) -> dict[str, str]:
    host = ctx["host"]
    pg: PostgresCluster = ctx["pg"]
    user = natsconfig.agent_user(host) if service in AGENTS else service
    if service == "authcallout":
        user = natsconfig.CALLOUT_USER
    env = {
        "FLEETWATCH_NATS_URL": f"nats://127.0.0.1:{ctx['nats_port']}",
        "FLEETWATCH_NATS_USER": user,
        "FLEETWATCH_NATS_PASSWORD": ctx["creds"][user],
        "FLEETWATCH_HOST_ID": host,
        "FLEETWATCH_LOG_FORMAT": "text",
        "FLEETWATCH_DB_DSN": pg.dsn(CENTRAL_DB),
        "PYTHONUNBUFFERED": "1",
    }
    if service in AGENTS:
        env["FLEETWATCH_NATS_INBOX_PREFIX"] = f"_INBOX_{host}"
    if service == "replicator":
        env["FLEETWATCH_REPLICATOR_CENTRAL_DSN"] = pg.dsn(CENTRAL_DB)
        env["FLEETWATCH_REPLICATOR_LOCAL_DSN"] = pg.dsn(LOCAL_DB)
    if service == "authcallout":
        env["FLEETWATCH_AUTHCALLOUT_ISSUER_SEED"] = ctx["creds"][natsconfig.CALLOUT_SEED]
        env["FLEETWATCH_AUTHCALLOUT_TTL_S"] = str(ctx["callout_ttl"])
    if service == "commander":
        env["FLEETWATCH_COMMANDER_STATE_DIR"] = str(state.root / "commander")
    if service == "gateway":
        env["FLEETWATCH_GATEWAY_PORT"] = str(ctx["gateway_port"])
        env["FLEETWATCH_GATEWAY_ADMIN_PASSWORD_FILE"] = str(state.root / "admin-password")
        env["FLEETWATCH_GATEWAY_SECRET_KEY"] = state.secret("gateway-secret")
    return env


def available_services() -> list[str]:
    """Services whose package has a `__main__` (the dev stack runs what exists)."""
    root = Path(importlib.util.find_spec("services").submodule_search_locations[0])
    return [s for s in SERVICES if (root / s / "__main__.py").exists()]


def _cmd_dev(args: argparse.Namespace) -> int:
    from honcho.manager import Manager
    from honcho.printer import Printer

    state = DevState(Path(args.state_dir).resolve())
    ctx = prepare(state, args.callout_ttl)
    state.secret("admin-password")
    py = sys.executable
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    m = Manager(Printer(sys.stdout))
    m.add_process("nats", f"{py} -m fleetwatch _serve-nats --state-dir {state.root}", env=base_env)
    m.add_process("postgres", f"{py} -m fleetwatch _serve-pg --state-dir {state.root}", env=base_env)
    for s in available_services():
        m.add_process(s, f"{py} -m services.{s}", env={**base_env, **service_env(state, ctx, s)})
    m.add_process("setup", f"{py} -m fleetwatch _setup --state-dir {state.root}", env=base_env)
    m.loop()
    return m.returncode or 0


def _forward(proc: subprocess.Popen, sig_map: dict[int, int]) -> int:
    """Run a server in its own session and translate our stop signal (honcho sends SIGTERM)."""
    for ours, theirs in sig_map.items():
        signal.signal(ours, lambda *_a, t=theirs: proc.poll() is None and proc.send_signal(t))
    return proc.wait()


def _cmd_serve_nats(args: argparse.Namespace) -> int:
    state = DevState(Path(args.state_dir))
    srv = NatsServer(state.root / "nats" / "nats.conf", state.data["nats_port"])
    from libs.embedded.natsserver import find_nats_server

    proc = subprocess.Popen([find_nats_server(), "-c", str(srv.config)], start_new_session=True)
    return _forward(proc, {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGTERM})


def _cmd_serve_pg(args: argparse.Namespace) -> int:
    state = DevState(Path(args.state_dir))
    pg = PostgresCluster(state.pg_dir(), state.data["pg_port"], password_file=state.root / "pg-password")
    proc = subprocess.Popen(pg.command(), start_new_session=True)
    # SIGTERM would be PostgreSQL's "smart" shutdown, which waits for every client; SIGINT is "fast".
    return _forward(proc, {signal.SIGTERM: signal.SIGINT, signal.SIGINT: signal.SIGINT})


async def _setup(state: DevState) -> None:
    import asyncpg

    from libs.runtime import NatsSettings, connect
    from libs.runtime.jetstream import provision

    creds = json.loads((state.root / "nats" / "credentials.json").read_text())
    nc = await connect(
        NatsSettings(url=f"nats://127.0.0.1:{state.data['nats_port']}", user="admin", password=creds["admin"]), "setup"
    )
    await provision(nc)
    await nc.close()
    pg = PostgresCluster(state.pg_dir(), state.data["pg_port"], password_file=state.root / "pg-password")
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = await asyncpg.connect(pg.dsn("postgres"), timeout=2)
            break
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
    try:
        for db in (CENTRAL_DB, LOCAL_DB):
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", db):
                await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()


def _gateway_ready(port: int, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _cmd_setup(args: argparse.Namespace) -> int:
    state = DevState(Path(args.state_dir))
    t0 = time.monotonic()
    asyncio.run(_setup(state))
    port = state.data["gateway_port"]
    has_gateway = "gateway" in available_services()
    if has_gateway and not _gateway_ready(port, 60):
        print("gateway did not answer /healthz within 60 s", flush=True)
    pw = (state.root / "admin-password").read_text().strip()
    print(f"fleetwatch ready in {time.monotonic() - t0:.1f}s", flush=True)
    if has_gateway:
        print(f"  UI and API:  http://127.0.0.1:{port}/", flush=True)
        print("  add a host:  POST /api/v1/hosts (admin) returns its agents' NATS credentials once", flush=True)
    print(
        f"  NATS:        nats://127.0.0.1:{state.data['nats_port']} (credentials in {state.root / 'nats'})", flush=True
    )
    print(f"  login:       admin / {pw}   (stored in {state.root / 'admin-password'})", flush=True)
    print("  Ctrl-C stops everything.", flush=True)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    while not stop["flag"]:
        time.sleep(0.5)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="run the whole system on this machine (what `make run` does)")
    p.add_argument("--state-dir", default=".fleetwatch")
    p.add_argument(
        "--callout-ttl",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a registered host's login lasts; a revoked host is cut off within this",
    )
    p.set_defaults(func=_cmd_dev)
    for name, fn in (("_serve-nats", _cmd_serve_nats), ("_serve-pg", _cmd_serve_pg), ("_setup", _cmd_setup)):
        q = sub.add_parser(name)
        q.add_argument("--state-dir", default=".fleetwatch")
        q.set_defaults(func=fn)
