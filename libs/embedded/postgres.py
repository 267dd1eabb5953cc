from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .natsserver import wait_port

PG_USER = "postgres"  # the OS account PostgreSQL runs as when we are root


class PostgresMissing(RuntimeError):
    pass


def find_pg_bindir() -> Path:
    """The directory holding initdb and postgres: pg_config's answer, Debian's layout, or PATH."""
    env = os.environ.get("FLEETWATCH_PG_BINDIR")
    if env:
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            d = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
            if (d / "initdb").exists():
                return d
        except (subprocess.CalledProcessError, OSError):
            pass
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if debian:
        return Path(debian[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, postgres) not found: install them, e.g. `apt-get install postgresql` on Debian/Ubuntu, or set FLEETWATCH_PG_BINDIR"
    )


def pkglibdir(bindir: Path) -> Path:
    """Where this server looks for `$libdir` shared libraries (extensions' .so files)."""
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        try:
            return Path(
                subprocess.run(
                    [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True
                ).stdout.strip()
            )
        except (subprocess.CalledProcessError, OSError):
            pass
    return bindir.parent / "lib"  # Debian's layout: .../<major>/bin next to .../<major>/lib


def preload_settings(bindir: Path) -> dict[str, str]:
    """Server settings for optional extensions that must be preloaded, when installed.

    TimescaleDB only works from `shared_preload_libraries`; a server without its library must
    not name it (postgres would refuse to start), so it is added only when the file is there.
    """
    if not (pkglibdir(bindir) / "timescaledb.so").exists():
        return {}
    return {
        "shared_preload_libraries": "timescaledb",
        "timescaledb.telemetry_level": "off",  # no phoning home from a test or dev cluster
        "timescaledb.max_background_workers": "8",
        "max_worker_processes": "16",  # room for TimescaleDB's scheduler and jobs next to parallel query
    }


def _as_pg_user() -> list[str]:
    """Prefix that drops root to the postgres account (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        raise PostgresMissing(f"running as root but there is no '{PG_USER}' user to run PostgreSQL as") from None
    return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--"]


def _write_private(path: Path, text: str) -> None:
    """Created 0600, never readable by others even for a moment (a job's user may be watching)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _chown_pg(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def pg_can_reach(path: Path) -> bool:
    """Whether the postgres account can traverse every parent of `path`."""
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_pg_user() + ["test", "-x", str(path)], capture_output=True).returncode == 0


class PostgresCluster:
    """A PostgreSQL cluster in `data_dir`, reachable over TCP on 127.0.0.1 only.

    The superuser `fleetwatch` authenticates with a generated password (scram-sha-256) kept in
    `<data_dir>/../pg-password` (0600): the same setup for `make run` and for the tests.
    """

    SUPERUSER = "fleetwatch"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        password_file: Path | None = None,
        settings: dict[str, str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.password_file = Path(password_file) if password_file else self.data_dir.parent / "pg-password"
        self.settings = settings or {}
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self.bindir = find_pg_bindir()

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        _chown_pg(self.data_dir)
        if not self.password_file.exists():
            _write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        # initdb reads the password from a file the postgres account can read; it is removed after.
        pwfile = self.data_dir.parent / f".initpw-{os.getpid()}"
        _write_private(pwfile, self.password + "\n")
        _chown_pg(pwfile)
        try:
            subprocess.run(
                _as_pg_user()
                + [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.strip()}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def command(self) -> list[str]:
        """The foreground server command (what `make run` supervises)."""
        args = _as_pg_user() + [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",  # TCP only: socket paths under deep directories are too long
        ]
        settings = (
            self.settings
            if "shared_preload_libraries" in self.settings
            else {**preload_settings(self.bindir), **self.settings}
        )
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        return args

    def start(self, timeout: float = 60.0) -> None:
        self.init()
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out, start_new_session=True)
        wait_port("127.0.0.1", self.port, timeout, self.proc)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        isready = self.bindir / "pg_isready"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with code {self.proc.returncode}")
            r = subprocess.run([str(isready), "-h", "127.0.0.1", "-p", str(self.port), "-q"], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not become ready")

    def stop(self, timeout: float = 30.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: aborts sessions, checkpoints, exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def __del__(self) -> None:
        try:
            if self.proc and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except Exception:
            pass
