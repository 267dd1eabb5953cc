"""`make run` (fleetwatch dev): ready quickly, reuses its data on a second run, and leaves no
process behind after Ctrl-C; a host registered through its gateway connects with the
credentials it got (auth callout, as in production), only to its own subjects, until revoked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from libs.runtime import NatsSettings, connect
from libs.schemas import subjects
from tests.conftest import ROOT, service_env

pytestmark = pytest.mark.slow


CALLOUT_TTL_S = 2


def _start(state: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetwatch", "dev", "--state-dir", str(state), "--callout-ttl", str(CALLOUT_TTL_S)],
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
        raise AssertionError(
            f"not ready after {time.monotonic() - t0:.0f}s (exit={proc.poll()}):\n" + "\n".join(lines[-60:])
        )
    return time.monotonic() - t0, lines


def _ctrl_c(proc: subprocess.Popen) -> list[int]:
    try:
        family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:  # it exited already: let the test's own failure show
        return []
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(40)
    deadline = time.monotonic() + 10
    alive = family
    while time.monotonic() < deadline:
        alive = [
            pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
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


async def _register_connect_revoke(state: Path) -> None:
    """The gateway of the running stack registers a host; its agent gets in with those
    credentials, may publish only its own subjects, and is cut off once revoked."""
    data = json.loads((state / "stack.json").read_text())
    nats_url = f"nats://127.0.0.1:{data['nats_port']}"
    api = f"http://127.0.0.1:{data['gateway_port']}/api/v1"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{api}/auth/login", json={"username": "admin", "password": (state / "admin-password").read_text().strip()}
        )
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        r = await http.post(f"{api}/hosts", json={"host": "devreg-1"}, headers=headers)
        assert r.status_code == 201, r.text
        creds = r.json()

        settings = NatsSettings(
            url=nats_url,
            user=creds["user"],
            password=creds["password"],
            inbox_prefix=creds["inbox_prefix"],
            reconnect_wait=0.2,
            connect_timeout=3,
        )
        violations: list[str] = []

        async def error_cb(e: Exception) -> None:
            violations.append(str(e))

        agent = await asyncio.wait_for(connect(settings, "devreg-agent", retry_forever=False, error_cb=error_cb), 20)
        js = agent.jetstream()
        assert (await js.publish(subjects.metrics("devreg-1"), b"{}", timeout=5)).stream == "METRICS"
        other = data["host_id"]  # this machine's host, a static user of the dev inventory
        await agent.publish(subjects.metrics(other), b"{}")
        await agent.flush()
        for _ in range(50):
            if violations:
                break
            await asyncio.sleep(0.1)
        assert any("publish" in v.lower() and subjects.metrics(other) in v for v in violations), violations

        # The static per-host user of the inventory still logs in beside the callout.
        static_user = f"agent-{other}"
        static_pw = json.loads((state / "nats" / "credentials.json").read_text())[static_user]
        static = await connect(
            NatsSettings(url=nats_url, user=static_user, password=static_pw, inbox_prefix=f"_INBOX_{other}"),
            "devreg-static",
            retry_forever=False,
        )
        await static.close()

        r = await http.delete(f"{api}/hosts/devreg-1/registration", headers=headers)
        assert r.status_code == 204, r.text
    t0 = time.monotonic()
    while agent.is_connected and time.monotonic() - t0 < CALLOUT_TTL_S + 15:
        await asyncio.sleep(0.2)
    assert not agent.is_connected, "revoked host still connected"
    await asyncio.sleep(1)
    assert not agent.is_connected, "revoked host got back in"
    with contextlib.suppress(Exception):  # it is mid-reconnect, being refused
        await agent.close()


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
        asyncio.run(_register_connect_revoke(state))
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


# -- a supervisor, not a house of cards ------------------------------------------------------


def _listener() -> socket.socket:
    """Another program's listening socket, on a free port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _me() -> str:
    return f"{psutil.Process().name()} (pid {os.getpid()})"


def _supervised(proc: subprocess.Popen) -> dict[str, int]:
    """name -> pid of each process the dev stack runs (the supervisor's direct children)."""
    out: dict[str, int] = {}
    for child in psutil.Process(proc.pid).children():
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "-m" in cmd and cmd[cmd.index("-m") + 1].startswith("services."):
            out[cmd[cmd.index("-m") + 1].removeprefix("services.")] = child.pid
        elif cmd and Path(cmd[0]).name == "nats-server":
            out["nats"] = child.pid
        elif cmd and Path(cmd[0]).name == "postgres":
            out["postgres"] = child.pid
    return out


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def _tail(lines: list[str], what: object) -> str:
    """An assertion's message: what differed, and the supervisor's lines and the stack's last output."""
    ours = [ln for ln in lines if "supervisor  |" in ln]
    return f"{what}\nsupervisor:\n" + "\n".join(ours) + "\nlast output:\n" + "\n".join(lines[-80:])


def _healthz(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_taken_gateway_port_is_named_and_nothing_starts(workdir):
    """The gateway's port is the operator's (bookmarks, saved logins): taken, the start stops with
    one line naming the program and what to do, before any server starts."""
    state = workdir / "devstack-gwport" / ".fleetwatch"
    state.mkdir(parents=True)
    blocker = _listener()
    port = blocker.getsockname()[1]
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = {"nats_port": a.getsockname()[1], "pg_port": b.getsockname()[1], "gateway_port": port}
    (state / "stack.json").write_text(json.dumps(ports))
    try:
        r = subprocess.run(
            [sys.executable, "-m", "fleetwatch", "dev", "--state-dir", str(state)],
            cwd=ROOT,
            env=service_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        blocker.close()
    assert r.returncode == 1, r
    assert r.stderr.strip().splitlines() == [
        f"fleetwatch: port {port} (gateway) is in use by {_me()}; "
        f"stop it or delete {state / 'stack.json'} to choose new ports"
    ], r.stderr
    assert "started" not in r.stdout and not (state / "nats" / "nats.conf").exists()
    assert json.loads((state / "stack.json").read_text())["gateway_port"] == port  # kept for when it is free


@pytest.fixture(scope="module")
def taken_nats_stack(workdir):
    """`fleetwatch dev` whose saved NATS port another program took: it moves to a free one.
    Yields (proc, output lines, state dir, the taken port); Ctrl-C at the end must leave nothing."""
    state = workdir / "devstack-supervised" / ".fleetwatch"
    state.mkdir(parents=True)
    blocker = _listener()
    taken = blocker.getsockname()[1]
    (state / "stack.json").write_text(json.dumps({"nats_port": taken}))
    proc = _start(state)
    try:
        _, lines = _wait_ready(proc, 90)
        yield proc, lines, state, taken
    finally:
        survivors = _ctrl_c(proc)
        blocker.close()
    assert proc.returncode == 0, proc.returncode
    assert not survivors, f"left behind after Ctrl-C: {_names(survivors)}"


def test_a_taken_nats_port_moves_to_a_free_one_and_the_env_files_follow(taken_nats_stack):
    proc, lines, state, taken = taken_nats_stack
    new = json.loads((state / "stack.json").read_text())["nats_port"]
    assert new != taken
    assert (
        f"port {taken} (nats) is in use by {_me()}; using port {new} instead (saved in {state / 'stack.json'})"
    ) in lines
    url = f"nats://127.0.0.1:{new}"
    assert f"  NATS:        {url} (credentials in {state / 'nats'})" in [ln.split("| ", 1)[-1] for ln in lines]
    # Sourcing one env file is enough to reach the stack.
    env_file = (state / "nats" / "env" / "simulator.env").read_text().splitlines()
    assert f"FLEETWATCH_NATS_URL={url}" in env_file
    r = subprocess.run(
        [
            "bash",
            "-c",
            f"set -a; . {state / 'nats' / 'env' / 'simulator.env'}; set +a; "
            f"exec {sys.executable} -m fleetwatch simulate --hosts 2 --rounds 1 --interval 0.2",
        ],
        cwd=ROOT,
        env={k: v for k, v in service_env().items() if not k.startswith("FLEETWATCH_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "round 1:" in r.stdout, r
    # A second `fleetwatch dev` on the same directory would share its data: refused in one line.
    r = subprocess.run(
        [sys.executable, "-m", "fleetwatch", "dev", "--state-dir", str(state)],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stderr.strip() == (
        f"fleetwatch: another `fleetwatch dev` (pid {proc.pid}) is running on {state}; stop it first (Ctrl-C there)"
    ), r


def test_a_sigkilled_service_is_back_within_10s_and_the_others_never_stop(taken_nats_stack):
    proc, lines, state, _ = taken_nats_stack
    gw_port = json.loads((state / "stack.json").read_text())["gateway_port"]
    before = _supervised(proc)
    assert {"nats", "postgres", "gateway", "alerter", "ingest"} <= set(before), _tail(lines, before)
    for victim in ("gateway", "alerter"):
        os.kill(before[victim], signal.SIGKILL)
        t0 = time.monotonic()
        new = _wait(lambda v=victim: (p := _supervised(proc).get(v)) != before[v] and p, 10, f"{victim} back")
        if victim == "gateway":
            _wait(lambda: _healthz(gw_port), 10 - (time.monotonic() - t0), "gateway /healthz answers again")
        assert time.monotonic() - t0 < 10
        assert any(
            ln.endswith(f"supervisor  | {victim} exited (code -9, SIGKILL); restarting in 1.0s (restart 1)")
            for ln in lines
        ), lines[-40:]
        now = _supervised(proc)
        assert now[victim] == new
        others = {k: v for k, v in before.items() if k not in ("gateway", "alerter")}
        assert {k: now.get(k) for k in others} == others, _tail(lines, "another process was restarted")
        before[victim] = new

    # nats-server is supervised the same way: back on its port, and the services reconnect to it
    # instead of being restarted.
    os.kill(before["nats"], signal.SIGKILL)
    _wait(lambda: (p := _supervised(proc).get("nats")) not in (None, before["nats"]) and p, 10, "nats back")
    now = _supervised(proc)
    kept = {k: v for k, v in before.items() if k != "nats"}
    assert {k: now.get(k) for k in kept} == kept, _tail(lines, "a service was restarted with nats")

    async def reach() -> None:
        creds = json.loads((state / "nats" / "credentials.json").read_text())
        url = f"nats://127.0.0.1:{json.loads((state / 'stack.json').read_text())['nats_port']}"
        nc = await connect(
            NatsSettings(url=url, user="admin", password=creds["admin"]), "devstack-check", retry_forever=False
        )
        await nc.close()

    asyncio.run(reach())
    assert _healthz(gw_port)
