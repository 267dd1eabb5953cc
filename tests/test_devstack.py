"""`make run` (fleetwatch dev): ready quickly, reuses its data on a second run, and leaves no
process behind after Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.conftest import ROOT, service_env

pytestmark = pytest.mark.slow


def _start(state: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetwatch", "dev", "--state-dir", str(state)],
        cwd=ROOT,
        env=service_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # like a terminal: Ctrl-C goes to this process group
    )


def _wait_ready(proc: subprocess.Popen, timeout: float) -> tuple[float, list[str]]:
    """Read output on a thread (keeps the pipe drained after ready) until the ready line."""
    t0 = time.monotonic()
    lines: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "fleetwatch ready" in line:
                ready.set()

    threading.Thread(target=reader, daemon=True).start()
    while time.monotonic() - t0 < timeout and proc.poll() is None and not ready.is_set():
        time.sleep(0.1)
    if not ready.is_set():
        raise AssertionError(f"not ready after {time.monotonic() - t0:.0f}s (exit={proc.poll()}):\n" + "\n".join(lines[-60:]))
    return time.monotonic() - t0, lines


def _ctrl_c(proc: subprocess.Popen) -> list[int]:
    family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(40)
    deadline = time.monotonic() + 10
    alive = family
    while time.monotonic() < deadline:
        alive = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.2)
    return alive


def _names(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(" ".join(psutil.Process(pid).cmdline())[:120])
        except psutil.Error:
            pass
    return out


async def _pg(state: Path) -> asyncpg.Connection:
    data = json.loads((state / "stack.json").read_text())
    pw = (state / "pg-password").read_text().strip()
    return await asyncpg.connect(f"postgresql://fleetwatch:{pw}@127.0.0.1:{data['pg_port']}/fleetwatch")


def test_make_run_ready_reuse_and_clean_stop(workdir):
    state = workdir / "devstack" / ".fleetwatch"
    state.parent.mkdir(parents=True)
    proc = _start(state)
    try:
        took, lines = _wait_ready(proc, 60)
        assert took < 60
        admin_pw = (state / "admin-password").read_text().strip()
        assert oct((state / "admin-password").stat().st_mode & 0o777) == "0o600"
        assert any(admin_pw in ln for ln in lines)  # printed once, for the operator

        async def mark() -> None:
            conn = await _pg(state)
            await conn.execute("CREATE TABLE devstack_marker (v text); INSERT INTO devstack_marker VALUES ('kept')")
            await conn.close()

        asyncio.run(mark())
    finally:
        survivors = _ctrl_c(proc)
    assert not survivors, f"left behind after Ctrl-C: {_names(survivors)}"

    proc = _start(state)
    try:
        _wait_ready(proc, 60)
        assert (state / "admin-password").read_text().strip() == admin_pw

        async def check() -> str:
            conn = await _pg(state)
            v = await conn.fetchval("SELECT v FROM devstack_marker")
            await conn.close()
            return v

        assert asyncio.run(check()) == "kept"
    finally:
        survivors = _ctrl_c(proc)
    assert not survivors, f"left behind after Ctrl-C: {_names(survivors)}"
