"""`fleetwatch dev` (what `make run` calls): the whole system on this machine.

State lives under `.fleetwatch/`: ports, NATS config and credentials, the JetStream store, the
PostgreSQL cluster and the generated admin password. A second run reuses all of it.

`fleetwatch.supervise` runs every process with prefixed output, nats-server and PostgreSQL
included: one that exits unexpectedly (a crash, `kill -9`) is started again after a backoff
while the others keep running; only Ctrl-C (or SIGTERM) stops them all. A port saved in
`stack.json` that another program took since is checked before anything starts: the internal
ones (NATS, PostgreSQL) move to a free port, the gateway's (the user's URL) stops the start
with a sentence naming the program.

NATS runs as in production: the inventory's hosts log in as static users, and a host an admin
registers through the gateway (`POST /api/v1/hosts`) is let in by the authcallout service.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import hashlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO

import msgspec

from libs.embedded import PostgresCluster, find_nats_server, free_port, natsconfig
from libs.embedded.postgres import PostgresMissing, find_pg_bindir, pg_can_reach
from libs.schemas.ids import host_id_from_hostname

from .portcheck import port_free, port_owner
from .supervise import ProcessSpec, Supervisor, SupervisorConfig

# Start order (started one after another without waiting; services wait for their dependencies
# themselves). Stopped in the reverse order.
SERVICES = ("authcallout", "ingest", "collector", "commander", "replicator", "alerter", "gateway")
AGENTS = {"collector", "commander", "replicator"}
CENTRAL_DB = "fleetwatch"
LOCAL_DB = "fleetwatch_local"  # the replicator's per-host copy; same cluster on one machine

# stack.json key -> (name in messages, preferred port, whether a taken one may move). NATS and
# PostgreSQL are reached only through what each start writes (the env files, the services'
# settings, stack.json), so a free port does as well. The gateway's is the operator's: a
# bookmark, the URL a `fleetwatch login` saved; moving it would break those silently.
PORTS: dict[str, tuple[str, int, bool]] = {
    "nats_port": ("nats", 4222, True),
    "pg_port": ("postgres", 15432, True),
    "gateway_port": ("gateway", 8080, False),
}


class DevError(Exception):
    """Why `fleetwatch dev` cannot start: one line on stderr, exit status 1."""


def _shown(path: Path) -> str:
    """A path as the operator typed it: relative to the current directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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
            self.data[name] = preferred if port_free(preferred) else free_port()
            self.save()
        return self.data[name]

    def save(self) -> None:
        self.file.write_text(json.dumps(self.data, indent=2) + "\n")

    def secret(self, name: str) -> str:
        """A generated secret in a file created 0600: the commander's jobs run as another user
        (services/commander/policy.py), which must never read the gateway's key, not even once."""
        p = self.root / name
        if not p.exists():
            with os.fdopen(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(secrets.token_urlsafe(18) + "\n")
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


def lock_state(state: DevState) -> IO[str]:
    """Hold `dev.lock` for as long as this process runs: a second `fleetwatch dev` on the same
    directory would fight the first over its ports and share its database and JetStream store.
    The file is not inherited (close-on-exec), so only this process holds the lock."""
    f = open(state.root / "dev.lock", "a+")  # held until the process exits
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise DevError(
            f"another `fleetwatch dev` (pid {pid}) is running on {_shown(state.root)}; stop it first (Ctrl-C there)"
        ) from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def check_ports(state: DevState) -> None:
    """Every port of stack.json must be free for this start. A taken internal one is replaced by
    a free port (saved, and said); a taken gateway port, or one held by a leftover of an earlier
    run of this same stack, is a DevError naming the program and what to do."""
    ours = {str(state.root), str((state.root / "pg").resolve())}
    for key, (label, _preferred, movable) in PORTS.items():
        port = state.data[key]
        if port_free(port):
            continue
        owner = port_owner(port)
        if owner.pid is not None and any(owner.mentions(d) for d in ours):
            # Moving ports here would start a second stack on the same data.
            raise DevError(
                f"port {port} ({label}) is in use by {owner}, left over from an earlier `fleetwatch dev` "
                f"of {_shown(state.root)}; stop it (kill {owner.pid}) and run again"
            )
        if not movable:
            raise DevError(
                f"port {port} ({label}) is in use by {owner}; stop it or delete "
                f"{_shown(state.file)} to choose new ports"
            )
        taken = {v for k, v in state.data.items() if k in PORTS}
        new = free_port()
        while new in taken:
            new = free_port()
        state.data[key] = new
        state.save()
        print(
            f"port {port} ({label}) is in use by {owner}; using port {new} instead (saved in {_shown(state.file)})",
            flush=True,
        )


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
    for key, (_label, preferred, _movable) in PORTS.items():
        state.port(key, preferred)
    check_ports(state)  # before the config that names them is written
    nats_port, pg_port, gw_port = (state.data[k] for k in PORTS)
    inv_path = state.root / "inventory.toml"
    if not inv_path.exists():
        inv_path.write_text(f'# hosts whose agents may connect to the dev NATS server\n[[hosts]]\nid = "{host}"\n')
    inv = natsconfig.load_inventory(inv_path)
    # Registration on, whatever an older state dir's inventory says (the same nats.conf as production).
    inv = msgspec.structs.replace(inv, server=msgspec.structs.replace(inv.server, registration=True))
    # JetStream keeps the audit trail and the registered hosts' hashed secrets: the server's only.
    (state.root / "jetstream").mkdir(mode=0o700, exist_ok=True)
    os.chmod(state.root / "jetstream", 0o700)
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
    state = DevState(Path(args.state_dir).resolve())
    try:
        lock = lock_state(state)
        ctx = prepare(state, args.callout_ttl)
    except DevError as exc:
        print(f"fleetwatch: {exc}", file=sys.stderr)
        return 1
    state.secret("admin-password")
    py = sys.executable
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    pg: PostgresCluster = ctx["pg"]
    # The servers run directly (no wrapper process): the supervisor sees their own exit, and
    # sends each the signal that stops it quickly.
    procs = [
        ProcessSpec(name="nats", argv=[find_nats_server(), "-c", str(state.root / "nats" / "nats.conf")], env=base_env),
        ProcessSpec(name="postgres", argv=pg.command(), env=base_env, stop_signal=signal.SIGINT),
    ]
    for s in available_services():
        procs.append(
            ProcessSpec(name=s, argv=[py, "-m", f"services.{s}"], env={**base_env, **service_env(state, ctx, s)})
        )
    # Provisioning is a one-shot job: run again (after a backoff) only if it failed.
    procs.append(
        ProcessSpec(
            name="setup",
            argv=[py, "-m", "fleetwatch", "_setup", "--state-dir", str(state.root)],
            env=base_env,
            restart="on-failure",
        )
    )
    try:
        return Supervisor(SupervisorConfig(processes=procs)).run()
    finally:
        lock.close()


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
    try:
        asyncio.run(_setup(state))
    except Exception as exc:  # the supervisor runs it again; one line says why
        print(f"setup failed: {type(exc).__name__}: {exc}", flush=True)
        return 1
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
    print("  Ctrl-C stops everything; a process that exits on its own is started again.", flush=True)
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
    q = sub.add_parser("_setup")
    q.add_argument("--state-dir", default=".fleetwatch")
    q.set_defaults(func=_cmd_setup)
