"""Running a real commander in tests, and calling its control API like the gateway does."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil

from libs.schemas import subjects

ROOT = Path(__file__).resolve().parent.parent.parent


class CtlFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def ctl(nc, host: str, verb: str, body: dict | msgspec.Struct, reply_type: type | None = None, timeout: float = 20.0):
    """One control request; the micro error headers become CtlFailed(code, sentence)."""
    data = msgspec.json.encode(body)
    msg = await nc.request(subjects.ctl(host, verb), data, timeout=timeout)
    hdr = msg.headers or {}
    if "Nats-Service-Error-Code" in hdr:
        raise CtlFailed(int(hdr["Nats-Service-Error-Code"]), hdr.get("Nats-Service-Error", ""))
    if reply_type is None:
        return msgspec.json.decode(msg.data)
    return msgspec.json.decode(msg.data, type=reply_type)


class CommanderProcess:
    """`python -m services.commander` as the host agent `agent-<host>`."""

    def __init__(self, env: dict[str, str], state_dir: Path, log_path: Path, argv_prefix: list[str] | None = None, **settings: str) -> None:
        self.env = dict(env)
        self.env["FLEETWATCH_COMMANDER_STATE_DIR"] = str(state_dir)
        self.env.setdefault("FLEETWATCH_COMMANDER_RECONCILE_INTERVAL_S", "0.5")
        self.env.setdefault("FLEETWATCH_LOG_LEVEL", "INFO")
        for k, v in settings.items():
            self.env[f"FLEETWATCH_COMMANDER_{k.upper()}"] = v
        self.state_dir = state_dir
        self.log_path = log_path
        self.argv_prefix = argv_prefix or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> "CommanderProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.argv_prefix, sys.executable, "-m", "services.commander"], env=self.env, cwd=ROOT, stdout=self._log, stderr=self._log)
        return self

    async def wait_ready(self, nc, host: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"commander exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                await ctl(nc, host, "apps.list", {"actor": "test"}, timeout=1.0)
                return
            except Exception as exc:  # not subscribed yet
                last = exc
                await asyncio.sleep(0.1)
        raise RuntimeError(f"commander not ready: {last}; log: {self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def kill_tree_pids(pids: list[int]) -> None:
    """End processes a test started (by id), with their children."""
    for pid in pids:
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for c in p.children(recursive=True) + [p]:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_pid_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def env_clean() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
