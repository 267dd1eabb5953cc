"""Helpers for the replicator tests and bench: a central and a local database, central-side
writes (as the gateway would make them), a TCP proxy to cut the central database off, and the
service as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import string
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from libs.runtime.db import migrate

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_MIGRATIONS = ROOT / "services" / "gateway" / "migrations"
REPLICATOR_MIGRATIONS = ROOT / "services" / "replicator" / "migrations"

_B64 = string.ascii_letters + string.digits + "./"


def fake_hash() -> str:
    """A sha512-crypt-shaped string for bulk rows (hashing 100,000 real passwords takes minutes)."""
    salt = "".join(secrets.choice(_B64) for _ in range(16))
    return f"$6${salt}${''.join(secrets.choice(_B64) for _ in range(86))}"


def real_hash(password: str) -> str:
    from passlib.hash import sha512_crypt

    return sha512_crypt.using(rounds=5000).hash(password)


async def create_database(admin_dsn: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class Databases:
    """A central database with the gateway's users table and a local one with the replicator's schema."""

    def __init__(self, central_dsn: str, local_dsn: str) -> None:
        self.central_dsn = central_dsn
        self.local_dsn = local_dsn

    async def prepare(self, local_schema: bool = True) -> None:
        conn = await asyncpg.connect(self.central_dsn)
        try:
            await migrate(conn, "gateway", GATEWAY_MIGRATIONS)
        finally:
            await conn.close()
        if local_schema:
            conn = await asyncpg.connect(self.local_dsn)
            try:
                await migrate(conn, "replicator", REPLICATOR_MIGRATIONS)
            finally:
                await conn.close()


@contextlib.asynccontextmanager
async def two_databases(pg_cluster, local_schema: bool = True):
    admin = pg_cluster.dsn("postgres")
    central = await create_database(admin, "central")
    local = await create_database(admin, "local")
    dbs = Databases(pg_cluster.dsn(central), pg_cluster.dsn(local))
    try:
        await dbs.prepare(local_schema)
        yield dbs
    finally:
        await drop_database(admin, central)
        await drop_database(admin, local)


# -- the central side ---------------------------------------------------------------------------


async def add_user(
    conn,
    username: str,
    uid: int,
    *,
    password_hash: str | None = None,
    gid: int | None = None,
    active: bool = True,
    **extra,
) -> int:
    cols = {
        "username": username,
        "system_uid": uid,
        "system_gid": gid or uid,
        "password_hash": password_hash or fake_hash(),
        "is_active": active,
        "email": f"{username}@example.org",
    }
    cols.update(extra)
    names = ", ".join(cols)
    params = ", ".join(f"${i + 1}" for i in range(len(cols)))
    return await conn.fetchval(f"INSERT INTO users ({names}) VALUES ({params}) RETURNING id", *cols.values())


async def bulk_users(conn, n: int, *, prefix: str = "u", first_uid: int = 10000) -> None:
    """n active users u000000.. with uids from first_uid, loaded by COPY."""
    rows = [
        (f"{prefix}{i:06d}", f"{prefix}{i:06d}@example.org", fake_hash(), first_uid + i, first_uid + i)
        for i in range(n)
    ]
    await conn.copy_records_to_table(
        "users", records=rows, columns=("username", "email", "password_hash", "system_uid", "system_gid")
    )


async def local_users(dsn: str) -> dict[str, tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT username, system_uid, system_gid, shell, home, password_hash, is_admin, email FROM nss_users"
        )
    finally:
        await conn.close()
    return {r["username"]: tuple(r) for r in rows}


# -- a cuttable link to the central database -----------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> -> target. `close()` refuses new connections and cuts open ones, like a
    network partition in front of the central database; `open()` restores it on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_w))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns.discard(writer)
        self._conns.discard(up_w)


def with_port(dsn: str, port: int) -> str:
    """The same DSN through another port on 127.0.0.1."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(dsn)
    netloc = u.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(u._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


# -- the service as a subprocess -----------------------------------------------------------------


class ReplicatorProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ReplicatorProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.replicator"],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def replicator_env(
    service_env, nats_env: dict[str, str], central_dsn: str, local_dsn: str, **settings: str
) -> dict[str, str]:
    env = service_env(**nats_env)
    env["FLEETWATCH_REPLICATOR_CENTRAL_DSN"] = central_dsn
    env["FLEETWATCH_REPLICATOR_LOCAL_DSN"] = local_dsn
    for k, v in settings.items():
        env[f"FLEETWATCH_REPLICATOR_{k.upper()}"] = str(v)
    env.setdefault("FLEETWATCH_LOG_LEVEL", os.environ.get("FLEETWATCH_LOG_LEVEL", "INFO"))
    return env


class StatusWatch:
    """Every ReplicationStatus a host publishes, as it arrives (raw bytes kept for secret checks)."""

    def __init__(self) -> None:
        from libs.schemas import Codec, ReplicationStatus

        self.codec = Codec(ReplicationStatus)
        self.items: list[tuple[float, object]] = []  # (monotonic arrival, status)
        self.raw: list[bytes] = []
        self._changed = asyncio.Event()

    async def subscribe(self, nc, host: str) -> StatusWatch:
        from libs.schemas import subjects

        async def cb(msg) -> None:
            import time

            self.raw.append(msg.data)
            self.items.append((time.monotonic(), self.codec.decode(msg.data)))
            self._changed.set()

        self.sub = await nc.subscribe(subjects.replica(host), cb=cb)
        await nc.flush()
        return self

    async def wait_for(self, pred, timeout: float, after: int = 0):
        """The first status (from index `after`) matching pred, waiting up to timeout seconds."""
        import time

        deadline = time.monotonic() + timeout
        i = after
        while True:
            while i < len(self.items):
                if pred(self.items[i][1]):
                    return self.items[i]
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching status in {timeout}s; got {[s for _, s in self.items[after:]]}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


async def wait_local(dsn: str, pred, timeout: float, poll: float = 0.02) -> dict[str, tuple]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        users = await local_users(dsn)
        if pred(users):
            return users
        if time.monotonic() > deadline:
            raise TimeoutError(f"local users never matched; last: {sorted(users)[:20]}")
        await asyncio.sleep(poll)


# -- NSS through libnss-pgsql2, in a private mount namespace --------------------------------------

NSS_DIR = ROOT / "infra" / "nss"
NSS_MODULE = Path("/lib/libnss_pgsql.so.2")

# Inside `unshare -m`: mount a tmpfs, put the test's files in it as the upper layer of an overlay
# on /etc. Only this namespace sees the result; the machine's /etc is never written.
_NS_SCRIPT = r"""
set -e
stage="$1"; src="$2"; shift 2
mount -t tmpfs -o mode=0755 fleetwatch-nss "$stage"
mkdir "$stage/upper" "$stage/work"
cp -p "$src"/* "$stage/upper/"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$stage/upper,workdir=$stage/work" /etc
exec "$@"
"""


def render_nss_configs(
    dest: Path, *, port: int, dbname: str, nss_password: str, shadow_password: str, socket_dir: str = ""
) -> None:
    """The shipped infra/nss files with only their connection strings pointed at a test database
    (over TCP on 127.0.0.1, or through a socket directory when `socket_dir` is given)."""
    where = f"host={socket_dir} port={port}" if socket_dir else f"hostaddr=127.0.0.1 port={port}"
    dest.mkdir(parents=True, exist_ok=True)
    for name, key, user, pw, mode in (
        ("nss-pgsql.conf", "connectionstring", "fleetwatch_nss", nss_password, 0o644),
        ("nss-pgsql-root.conf", "shadowconnectionstring", "fleetwatch_nss_shadow", shadow_password, 0o600),
    ):
        lines = []
        for line in (NSS_DIR / name).read_text().splitlines():
            if line.split("=", 1)[0].strip() == key:
                line = f"{key} = {where} dbname={dbname} user={user} password={pw} connect_timeout=3"
            lines.append(line)
        p = dest / name
        p.write_text("\n".join(lines) + "\n")
        os.chmod(p, mode)
    (dest / "nsswitch.conf").write_text((NSS_DIR / "nsswitch.conf").read_text())
    os.chmod(dest / "nsswitch.conf", 0o644)


def in_nss_namespace(
    files: Path, stage: Path, argv: list[str], as_uid: int | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    """Run argv (no shell) with `files` laid over /etc in a private mount namespace."""
    stage.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", _NS_SCRIPT, "sh", str(stage), str(files)]
    if as_uid is not None:
        cmd += ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups", "--"]
    return subprocess.run(cmd + argv, capture_output=True, text=True, timeout=timeout)


class UnixRelay:
    """A PostgreSQL socket file (`<dir>/.s.PGSQL.<port>`) relayed to the TCP server: processes in
    another network namespace reach the database through the filesystem (libpq `host=<dir>`)."""

    def __init__(self, directory: Path, target_port: int, port: int = 5432) -> None:
        self.directory = Path(directory)
        self.port = port
        self.target = ("127.0.0.1", target_port)
        self._server = None

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        path = self.directory / f".s.PGSQL.{self.port}"
        self._server = await asyncio.start_unix_server(self._handle, path=str(path))
        os.chmod(path, 0o777)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(r, w) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


# Inside `unshare -m -n`: /etc overlaid as for NSS (plus pam.d/sshd from the stock system), a
# private /run, loopback up, a throwaway sshd on 127.0.0.1:2222, one password login attempt.
_SSH_SCRIPT = r"""
set -e
stage="$1"; src="$2"; conf="$3"; user="$4"; askpass="$5"
mount -t tmpfs -o mode=0755 fleetwatch-ssh "$stage"
mkdir "$stage/upper" "$stage/work"
cp -p "$src"/* "$stage/upper/"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$stage/upper,workdir=$stage/work" /etc
mount -t tmpfs -o mode=0755 fleetwatch-run /run
mkdir -m 0755 /run/sshd
ip link set lo up
/usr/sbin/sshd -D -e -f "$conf" &
sshd=$!
i=0
while ! (exec 3<>/dev/tcp/127.0.0.1/2222) 2>/dev/null; do
  i=$((i+1)); [ $i -gt 100 ] && { echo "sshd did not listen" >&2; kill $sshd; exit 90; }
  sleep 0.05
done
set +e
SSH_ASKPASS="$askpass" SSH_ASKPASS_REQUIRE=force setsid -w ssh -F /dev/null -p 2222 \
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  -o PreferredAuthentications=password -o PubkeyAuthentication=no -o NumberOfPasswordPrompts=1 \
  -o ConnectTimeout=10 -l "$user" 127.0.0.1 'echo logged-in-as-$(id -un)' </dev/null
rc=$?
kill $sshd 2>/dev/null
wait $sshd 2>/dev/null
exit $rc
"""


def write_sshd_config(d: Path) -> Path:
    """A host key and an sshd_config that allows password logins only, on 127.0.0.1:2222."""
    d.mkdir(parents=True, exist_ok=True)
    key = d / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, capture_output=True)
    conf = d / "sshd_config"
    conf.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                "Port 2222",
                f"HostKey {key}",
                "PidFile none",
                "UsePAM yes",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication no",
                "PermitRootLogin no",
                "StrictModes no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    return conf


async def ssh_password_login(
    files: Path, stage: Path, sshd_conf: Path, user: str, password: str, timeout: float = 60
) -> tuple[int, str, str]:
    """One `ssh user@127.0.0.1` with a password, against an sshd of its own in a private network
    and mount namespace (NSS/PAM configured from `files`). Returns (rc, stdout, stderr)."""
    stage.mkdir(parents=True, exist_ok=True)
    askpass = stage.parent / f"askpass-{uuid.uuid4().hex[:6]}"
    secret = stage.parent / f"pw-{uuid.uuid4().hex[:6]}"
    secret.write_text(password)
    os.chmod(secret, 0o600)
    askpass.write_text(f"#!/bin/sh\ncat {secret}\n")
    os.chmod(askpass, 0o700)
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "-m",
        "-n",
        "--propagation",
        "private",
        "--",
        "bash",
        "-c",
        _SSH_SCRIPT,
        "bash",
        str(stage),
        str(files),
        str(sshd_conf),
        user,
        str(askpass),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    finally:
        askpass.unlink(missing_ok=True)
        secret.unlink(missing_ok=True)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def schema_examples() -> dict:
    """One example per replicator message type, for tests/unit/test_schemas.py."""
    from libs.schemas.replication import SyncRequest

    return {SyncRequest: SyncRequest(actor="alice")}
