"""Scan -> adopt against a real commander and nats-server: `python -m module` is read as a
module with its args, fleetwatch's own services are not offered, and adopting takes over the
running process (no second copy); stop stops it, start starts exactly one copy."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import psutil
import pytest

from libs.schemas.control import ScanReply
from tests.conftest import service_env
from tests.support.commander import CommanderProcess, CtlFailed, app_op, ctl, register_app, remove_apps, wait_state

HOST = "host-a"


@pytest.fixture
async def commander(nats_stack, nc, workdir):
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), workdir / "adopt-state", workdir / "adopt.log")
    cp.start()
    await cp.wait_ready(nc, HOST)
    yield cp
    await remove_apps(nc, HOST, ["web"])
    cp.stop()
    cp.kill_children()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _servers(port: int) -> list[int]:
    """Processes running `-m http.server <port>` (any parent)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "-m" in cmd and "http.server" in cmd and str(port) in cmd and p.status() != psutil.STATUS_ZOMBIE:
            out.append(p.info["pid"])
    return out


async def _scan(nc, pid: int, port: int):
    deadline = time.monotonic() + 15
    while True:
        r = await ctl(nc, HOST, "procs.scan", {"actor": "alice"}, ScanReply)
        mine = [p for p in r.procs if p.pid == pid]
        if (mine and port in mine[0].ports) or time.monotonic() > deadline:
            return r, mine
        await asyncio.sleep(0.2)


async def test_scan_reads_python_module_and_adopt_takes_over(commander, nc, tmp_path):
    port = _free_port()
    argv = ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # A stand-in for one of fleetwatch's own services, run the way they run (`-m services.x`).
    pkg = tmp_path / "own" / "services"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "fakesvc.py").write_text("import time\ntime.sleep(120)\n")
    own = subprocess.Popen([sys.executable, "-m", "services.fakesvc"], cwd=pkg.parent)
    try:
        r, mine = await _scan(nc, server.pid, port)
        assert mine, [p.cmdline for p in r.procs]
        found = mine[0]
        assert found.runtime == "python" and found.module == "http.server" and found.script == ""
        assert found.args == [str(port), "--bind", "127.0.0.1"] and found.interpreter.endswith("python3")
        pids = {p.pid for p in r.procs}
        assert own.pid not in pids and commander.proc.pid not in pids  # fleetwatch's own: not offered

        # Adopt it with the spec the scan suggests.
        run = {"runtime": "python", "interpreter": found.interpreter, "module": found.module, "args": found.args}
        info = await register_app(nc, HOST, {"name": "web", "run": run, "cwd": str(tmp_path)}, adopt_pid=server.pid)
        assert info.state == "running" and info.pid == server.pid
        await asyncio.sleep(1.0)  # a second copy would have been spawned by now
        assert _servers(port) == [server.pid]
        listed = await app_op(nc, HOST, "apps.status", "web")
        assert listed.state == "running" and listed.pid == server.pid

        stopped = await app_op(nc, HOST, "apps.stop", "web")
        assert stopped.state == "stopped" and server.wait(10) is not None and _servers(port) == []

        started = await app_op(nc, HOST, "apps.start", "web")
        await wait_state(nc, HOST, "web", {"running"})
        deadline = time.monotonic() + 10
        while len(_servers(port)) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _servers(port) == [started.pid] and started.pid != server.pid
        # A second start is refused (409): still one copy.
        with pytest.raises(CtlFailed) as ei:
            await app_op(nc, HOST, "apps.start", "web")
        assert ei.value.code == 409 and "already running" in ei.value.message
        await asyncio.sleep(0.5)
        assert _servers(port) == [started.pid]
    finally:
        for p in (server, own):
            p.kill()
            p.wait()


async def test_python_run_needs_exactly_one_of_script_and_module(commander, nc, tmp_path):
    for run, why in (
        ({"runtime": "python", "script": str(tmp_path / "a.py"), "module": "http.server"}, "not both"),
        ({"runtime": "python", "module": "http.server; rm -rf /"}, "dotted Python module"),
    ):
        with pytest.raises(CtlFailed) as ei:
            await register_app(nc, HOST, {"name": "bad-run", "run": run})
        assert ei.value.code == 400 and why in ei.value.message
