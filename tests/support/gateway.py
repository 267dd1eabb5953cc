"""Start the real gateway (`python -m services.gateway`) on a free port against the test NATS and
PostgreSQL, and log in as a user of any role.

    gw = start_gateway(nats_stack, dsn, tmp_dir)       # admin created from a password file
    headers = gw.headers("operator")                    # creates user `operator1` on first use
    httpx.get(gw.url + "/api/v1/hosts", headers=headers)
    gw.stop()

Or as a fixture: `with running_gateway(nats_stack, dsn, tmp_dir) as gw: ...`.
`gw.actor(role)` is the username behind `gw.headers(role)` (what audit records will name).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from libs.embedded.natsserver import free_port

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("viewer", "operator", "admin")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    env["FLEETWATCH_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


class GatewayProcess:
    def __init__(self, proc: subprocess.Popen, url: str, admin_password: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.admin_password = admin_password
        self.log_path = log_path
        self._tokens: dict[str, str] = {}
        self._users: dict[str, str] = {}

    # -- users and tokens ----------------------------------------------------------------
    def login(self, username: str, password: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30)
        r.raise_for_status()
        return r.json()["token"]

    def token(self, role: str) -> str:
        """A session token for a user with exactly `role` (created on first use)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if role not in self._tokens:
            if role == "admin":
                self._users[role] = "admin"
                self._tokens[role] = self.login("admin", self.admin_password)
            else:
                name, password = f"{role}1", secrets.token_urlsafe(12)
                r = httpx.post(
                    f"{self.url}/api/v1/users",
                    json={"username": name, "password": password, "role": role},
                    headers=self.headers("admin"),
                    timeout=30,
                )
                if r.status_code != 409:
                    r.raise_for_status()
                else:  # made by an earlier helper on this database: set a known password
                    httpx.patch(
                        f"{self.url}/api/v1/users/{name}",
                        json={"password": password, "role": role, "is_active": True},
                        headers=self.headers("admin"),
                        timeout=30,
                    ).raise_for_status()
                self._users[role] = name
                self._tokens[role] = self.login(name, password)
        return self._tokens[role]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}

    def use_password(self, role: str, password: str) -> None:
        """The role's user now has `password` (a reset ended its sessions): sign in with it."""
        self._tokens[role] = self.login(self.actor(role), password)

    def forget(self, role: str) -> None:
        """Drop the role's session (its password changed); the next use signs in again."""
        self._tokens.pop(role, None)

    def actor(self, role: str) -> str:
        self.token(role)
        return self._users[role]

    def client(self, role: str | None = None, **kwargs) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=self.headers(role) if role else {}, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    def async_client(self, role: str | None = None, **kwargs) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers=self.headers(role) if role else {}, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    # -- process -------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_gateway(
    nats_env: dict[str, str] | object,
    dsn: str,
    workdir: Path,
    *,
    timeout: float = 60,
    admin_password: str | None = None,
    **settings: str,
) -> GatewayProcess:
    """Start the gateway; `nats_env` is `nats_stack.env("gateway")` or the NatsStack itself.
    Extra `settings` become FLEETWATCH_GATEWAY_<NAME> variables (e.g. stream_queue_size="8").
    On a database where an earlier gateway made the admin, pass that one's `admin_password`."""
    if not isinstance(nats_env, dict):
        nats_env = nats_env.env("gateway")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pw_file = workdir / f"admin-password-{port}"
    password = admin_password or secrets.token_urlsafe(16)
    pw_file.write_text(password + "\n")
    pw_file.chmod(0o600)
    env = {
        **nats_env,
        "FLEETWATCH_DB_DSN": dsn,
        "FLEETWATCH_DB_POOL_MAX": "8",
        "FLEETWATCH_GATEWAY_PORT": str(port),
        "FLEETWATCH_GATEWAY_SECRET_KEY": secrets.token_hex(16),
        "FLEETWATCH_GATEWAY_ADMIN_PASSWORD_FILE": str(pw_file),
        # Fast hashes: tests log in often; production keeps the default rounds.
        "FLEETWATCH_GATEWAY_HASH_ROUNDS": "5000",
    }
    env.update({f"FLEETWATCH_GATEWAY_{k.upper()}": str(v) for k, v in settings.items()})
    log_path = workdir / f"gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"], env=_env(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    gw = GatewayProcess(proc, f"http://127.0.0.1:{port}", password, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.log()[-4000:]}")
        try:
            if httpx.get(f"{gw.url}/readyz", timeout=2).status_code == 200:
                return gw
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            gw.stop()
            raise RuntimeError(f"gateway not ready within {timeout:g} s:\n{gw.log()[-4000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_gateway(nats_env, dsn: str, workdir: Path, **settings: str):
    gw = start_gateway(nats_env, dsn, workdir, **settings)  # admin_password= passes through
    try:
        yield gw
    finally:
        gw.stop()


async def create_database(admin_dsn_of, prefix: str = "gw") -> str:
    """A fresh database on the test cluster (`admin_dsn_of` is `pg_cluster.dsn`), for fixtures
    wider than one test (the `db_dsn` fixture is per test)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn_of("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn_of(name)


async def drop_database(admin_dsn_of, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1].split("?", 1)[0]
    conn = await asyncpg.connect(admin_dsn_of("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def apply_ingest_schema(dsn: str) -> None:
    """The history tables, created the one way they are created: ingest's own migrations."""
    from libs.runtime.db import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, "ingest", ROOT / "services" / "ingest" / "migrations")
    finally:
        await conn.close()


def run_async(coro):
    """Run a coroutine from sync code (fixtures of sync tests)."""
    return asyncio.run(coro)


class SSEEvent:
    __slots__ = ("id", "event", "data", "comment")

    def __init__(self) -> None:
        self.id: str | None = None
        self.event = "message"
        self.data = ""
        self.comment = ""

    def json(self):
        import json

        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"SSEEvent(id={self.id}, event={self.event}, data={self.data[:80]!r}, comment={self.comment!r})"


async def sse_events(response: httpx.Response, *, comments: bool = False):
    """Parse a streaming httpx response (`client.stream("GET", "/api/v1/stream")`) into events;
    with `comments`, heartbeat comment lines are yielded as events with `.comment` set."""
    ev = SSEEvent()
    async for line in response.aiter_lines():
        if line == "":
            if ev.data or ev.id is not None:
                yield ev
            ev = SSEEvent()
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "":
            if comments:
                c = SSEEvent()
                c.comment = value
                yield c
        elif field == "id":
            ev.id = value
        elif field == "event":
            ev.event = value
        elif field == "data":
            ev.data = value if not ev.data else ev.data + "\n" + value
