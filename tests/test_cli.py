"""The operator CLI driven as a subprocess (`python -m fleetwatch ...`) against the real stack:
real gateway, real commander (agent-host-c), real ingest writing the audit table, simulated hosts
on NATS. One stack for the module."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fleetwatch.simulate import Simulator
from libs.schemas.alerting import Rule
from tests.conftest import ROOT, service_env
from tests.support.alerting import reset_alerting, start_alerter, stop_alerter
from tests.support.commander import APP_PYTHON, CommanderProcess
from tests.support.gateway import create_database, drop_database, running_gateway
from tests.support.pipeline import start_ingest, wait_until

HOST = "host-c"
SIM_HOSTS = ["clisim-a", "clisim-b", "clisim-c"]
APP = """
import itertools, time
for i in itertools.count():
    print(f"tick {i}", flush=True)
    time.sleep(0.3)
"""

pytestmark = pytest.mark.timeout(240)


class Result:
    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc, self.out, self.err = rc, out, err

    def json(self):
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out[-1500:]!r}, err={self.err[-1500:]!r})"


class Cli:
    """Runs `fleetwatch` with its own config dir; `role` puts that user's token in FLEETWATCH_TOKEN."""

    def __init__(self, gw, config_home: Path, nats_env: dict[str, str] | None = None) -> None:
        self.gw = gw
        self.config_home = config_home
        self.nats_env = nats_env or {}

    def env(self, role: str | None = None, **extra: str) -> dict[str, str]:
        env = service_env(XDG_CONFIG_HOME=str(self.config_home), FLEETWATCH_URL=self.gw.url, COLUMNS="200")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if role:
            env["FLEETWATCH_TOKEN"] = self.gw.token(role)
        env.update(extra)
        return env

    async def __call__(
        self,
        *args: str,
        role: str | None = None,
        stdin: str | None = None,
        timeout: float = 60,
        cwd: Path = ROOT,
        **extra: str,
    ) -> Result:
        env = self.env(role, **extra)
        if extra.get("FLEETWATCH_URL") == "":
            del env["FLEETWATCH_URL"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleetwatch",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
async def stack(nats_stack, pg_cluster, workdir):
    from libs.runtime import connect
    from libs.runtime.jetstream import provision

    admin = await connect(nats_stack.settings("admin"), "cli-test-setup", retry_forever=False)
    await provision(admin)
    dsn = await create_database(pg_cluster.dsn, "cli")
    d = workdir / "cli"
    d.mkdir(exist_ok=True)
    (d / "app.py").write_text(APP)
    ingest = start_ingest(nats_stack, dsn, d / "ingest.log")
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), d / "state", d / "commander.log").start()
    sim = Simulator(SIM_HOSTS, interval=1.0, seed=7, top_n=15)
    await reset_alerting(admin)
    alerter = await start_alerter(nats_stack)
    try:
        # Every frame of clisim-b fires this rule: the CLI's alert views have something to show.
        await alerter.api.put(
            "rule",
            Rule(name="cli-busy", field="cpu.percent", op=">=", threshold=0.0, hosts=["clisim-b"], summary="busy"),
        )
        await cp.wait_ready(admin, HOST)
        with running_gateway(nats_stack, dsn, d / "gw") as gw:
            await sim.publish(
                admin,
                [sim.info(h) for h in SIM_HOSTS]
                + [sim.frame(h) for h in SIM_HOSTS]
                + [sim.snapshot(h) for h in SIM_HOSTS],
            )
            await wait_until(lambda: _known(gw), 30, what="simulated hosts in the gateway")
            yield gw, Cli(gw, d / "config", nats_stack.env("gateway")), admin, sim, d, dsn
    finally:
        await stop_alerter(alerter)
        cp.stop()
        cp.kill_children()
        ingest.stop()
        await admin.close()
        await drop_database(pg_cluster.dsn, dsn)


async def _known(gw) -> bool:
    hosts = await api(gw, "viewer", "/api/v1/hosts")
    return {h["host"] for h in hosts if h["last"]} >= set(SIM_HOSTS)


async def after_rate_window(since: float) -> None:
    """The commander takes one change per app per second: wait out what is left of it since `since`."""
    await asyncio.sleep(max(0.0, since + 1.1 - time.monotonic()))


async def api(gw, role: str, path: str, **params):
    # async: the alerter runs in this event loop and must be free to answer the gateway
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(gw.url + path, headers=gw.headers(role), params=params)
    r.raise_for_status()
    return r.json()


async def test_login_stores_a_private_token_and_users_admin(stack, tmp_path):
    gw, cli, *_ = stack
    own = Cli(gw, tmp_path / "cfg")
    password = "s3cret-cli-pass"
    r = await cli("users", "add", "clio", "--role", "operator", "--password-stdin", role="admin", stdin=password + "\n")
    assert r.rc == 0, r
    assert password not in r.out + r.err

    r = await cli("users", "add", "clio", "--password-stdin", role="admin", stdin="whatever-pass\n")
    assert r.rc == 1 and "conflict (409)" in r.err
    r = await cli("users", "add", "Bad Name", "--no-password", role="admin")
    assert r.rc == 1 and "bad request (400)" in r.err and "username" in r.err

    r = await own("login", "--username", "clio", "--password-stdin", stdin=password + "\n")
    assert r.rc == 0, r
    cred = tmp_path / "cfg" / "fleetwatch" / "credentials.json"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600 and stat.S_IMODE(cred.parent.stat().st_mode) == 0o700
    assert password not in cred.read_text() + r.out + r.err
    me = await own("whoami", "--json")  # the saved token, no FLEETWATCH_TOKEN
    assert (
        me.rc == 0
        and me.json()["username"] == "clio"
        and me.json()["role"] == "operator"
        and me.json()["via"] == "session"
    )

    # A token saved for one gateway is never sent to another URL.
    r = await own("whoami", FLEETWATCH_URL="http://127.0.0.1:9")
    assert r.rc == 1 and "saved login is for" in r.err

    # An API token for automation, from the CLI, used through the environment.
    r = await own("tokens", "create", "ci-read", "--role", "viewer")
    assert r.rc == 0, r
    token = r.out.strip()
    me = await own("whoami", "--json", FLEETWATCH_TOKEN=token)
    assert me.rc == 0 and me.json() == {
        "username": "clio",
        "user_id": me.json()["user_id"],
        "role": "viewer",
        "via": "api_token",
    }

    r = await own("login", "--username", "clio", "--password-stdin", stdin="wrong-password\n")
    assert r.rc == 1 and "not authenticated (401): wrong username or password" in r.err

    new = "an0ther-cli-pass"
    assert (await cli("users", "passwd", "clio", "--password-stdin", role="admin", stdin=new + "\n")).rc == 0
    assert (await own("login", "-u", "clio", "--password-stdin", stdin=new + "\n")).rc == 0
    r = await cli("users", "deactivate", "clio", role="admin")
    assert r.rc == 0 and "deactivated" in r.out
    r = await own("login", "-u", "clio", "--password-stdin", stdin=new + "\n")
    assert r.rc == 1 and "refused (403): account is deactivated" in r.err
    listing = await cli("users", "list", "--all", "--json", role="admin")
    assert next(u for u in listing.json() if u["username"] == "clio")["is_active"] is False
    assert (await own("logout")).rc == 0 and not cred.exists()


async def test_hosts_from_the_simulator_and_json_is_the_api(stack):
    gw, cli, admin, sim, *_ = stack
    # Fresh frames: a host is online for 30 s after its last one.
    t0 = time.time()
    await sim.publish(admin, [sim.frame(h) for h in SIM_HOSTS])

    async def fresh():
        return all(
            h["last"]["ts"] >= t0 - 1 for h in await api(gw, "viewer", "/api/v1/hosts") if h["host"] in SIM_HOSTS
        )

    await wait_until(fresh, 30, what="fresh frames in the gateway")
    # /hosts is rebuilt at most once a second and served stale meanwhile: let it settle.
    await asyncio.sleep(1.1)
    await api(gw, "viewer", "/api/v1/hosts")
    await asyncio.sleep(1.1)
    r = await cli("hosts", role="viewer")
    assert r.rc == 0, r
    rows = {ln.split()[0]: ln.split() for ln in r.out.splitlines() if ln.startswith("clisim-")}
    assert set(rows) == set(SIM_HOSTS)
    view = {h["host"]: h for h in await api(gw, "viewer", "/api/v1/hosts")}
    for h, cols in rows.items():
        assert cols[1] == "online"
        assert cols[2] == f"{view[h]['last']['cpu_percent']:.1f}%"  # CPU column is the API's figure

    r = await cli("hosts", "--json", role="viewer")
    assert r.rc == 0 and r.json() == await api(gw, "viewer", "/api/v1/hosts")
    r = await cli("hosts", SIM_HOSTS[0], "--json", role="viewer")
    assert r.rc == 0 and r.json() == await api(gw, "viewer", f"/api/v1/hosts/{SIM_HOSTS[0]}")
    r = await cli("hosts", "no-such-host", role="viewer")
    assert r.rc == 1 and "not found (404)" in r.err


async def test_top_follows_the_live_stream(stack):
    gw, cli, admin, sim, *_ = stack
    host = SIM_HOSTS[0]
    stop = asyncio.Event()
    cpus: list[float] = []

    async def publish() -> None:
        while not stop.is_set():
            f = sim.frame(host)
            cpus.append(f.cpu.percent)
            await sim.publish(admin, [f, sim.snapshot(host)])
            await asyncio.sleep(0.4)

    task = asyncio.create_task(publish())
    try:
        r = await cli("top", host, "--iterations", "3", role="viewer", timeout=60)
    finally:
        stop.set()
        await task
    assert r.rc == 0, r
    screens = r.out.split("\n\n" + host)
    assert len(screens) >= 4  # the first view, then one per live frame
    last = screens[-1]
    assert "PID" in last and "COMMAND" in last and "/usr/bin/" in last  # the process table
    assert any(f"CPU {c:5.1f}%" in r.out for c in cpus)  # a CPU figure the simulator published live

    r = await cli("top", host, "--once", "--json", role="viewer")
    assert r.rc == 0 and r.json()["last"]["host"] == host
    r = await cli("top", "no-such-host", "--once", role="viewer")
    assert r.rc == 1 and "not found (404)" in r.err


async def test_apps_restart_is_audited_with_the_cli_user_and_viewer_refused(stack):
    gw, cli, _, _, d, _ = stack
    r = await cli(
        "apps",
        HOST,
        "register",
        "web",
        "--python",
        str(d / "app.py"),
        "--interpreter",
        APP_PYTHON,
        "--start",
        role="admin",
    )
    changed = time.monotonic()
    assert r.rc == 0, r
    assert "web on host-c: registered" in r.out

    async def running():
        return all(a["state"] == "running" for a in (await api(gw, "viewer", f"/api/v1/hosts/{HOST}/apps"))["apps"])

    await wait_until(running, 30, what="web running")
    listing = await cli("apps", HOST, "--json", role="viewer")
    assert listing.rc == 0, listing
    via_api = await api(gw, "viewer", f"/api/v1/hosts/{HOST}/apps")
    assert [(a["spec"], a["pid"], a["state"]) for a in listing.json()["apps"]] == [
        (a["spec"], a["pid"], a["state"]) for a in via_api["apps"]
    ]
    table = await cli("apps", HOST, role="viewer")
    assert "web" in table.out and "running" in table.out

    r = await cli("apps", HOST, "restart", "web", role="viewer")
    assert r.rc == 1 and r.out == ""
    assert "refused (403): role operator or higher required (you have viewer)" in r.err

    # An operator who logged in with `fleetwatch login` (saved token, no FLEETWATCH_TOKEN).
    me = Cli(gw, d / "cliop-config")
    assert (
        await cli(
            "users", "add", "cliop", "--role", "operator", "--password-stdin", role="admin", stdin="cliop-password\n"
        )
    ).rc == 0
    assert (await me("login", "-u", "cliop", "--password-stdin", stdin="cliop-password\n")).rc == 0
    await after_rate_window(changed)
    r = await me("apps", HOST, "restart", "web", "--json")
    changed = time.monotonic()
    assert r.rc == 0, r
    assert r.json()["app"]["pid"] != via_api["apps"][0]["pid"]

    async def audited_restart():
        a = await me("audit", "--host", HOST, "--user", "cliop", "--json")
        assert a.rc == 0, a
        return a.json()["items"] or None

    rows = await wait_until(audited_restart, 30, interval=0.5, what="cliop's restart in the audit log")
    assert [(i["actor"], i["action"], i["target"], i["code"], i["result"]) for i in rows] == [
        ("cliop", "apps.restart", "web", 200, "ok")
    ]
    human = await me("audit", "--host", HOST, "--user", "cliop")
    assert any(
        ln.split()[2:8] == ["cliop", HOST, "apps.restart", "web", "ok", "200"] for ln in human.out.splitlines()
    ), human
    # Two at once: the commander takes one change per app per second, the other is told to retry.
    # (On a loaded machine two process starts can be a second apart: then both pass; try again.)
    for _ in range(4):
        await after_rate_window(changed)
        both = await asyncio.gather(*(cli("apps", HOST, "restart", "web", role="operator") for _ in range(2)))
        changed = time.monotonic()
        assert 0 in [b.rc for b in both], both
        if 1 in [b.rc for b in both]:
            break
    assert sorted(b.rc for b in both) == [0, 1], both
    assert "too many requests (429)" in next(b for b in both if b.rc).err
    r = await cli("apps", HOST, "restart", "nope", role="operator")
    assert r.rc == 1 and "not found (404)" in r.err

    operator = gw.actor("operator")

    async def audited():
        a = await cli(
            "audit",
            "--host",
            HOST,
            "--user",
            operator,
            "--action",
            "apps.restart",
            "--since",
            "10m",
            "--json",
            role="operator",
        )
        assert a.rc == 0, a
        return a.json()["items"] if {200, 404, 429} <= {i["code"] for i in a.json()["items"]} else None

    items = await wait_until(audited, 30, interval=0.5, what="the restarts in the audit log")
    assert {i["actor"] for i in items} == {operator} and {i["action"] for i in items} == {"apps.restart"}
    assert sorted(i["code"] for i in items).count(429) == 1 and [i["target"] for i in items if i["code"] == 404] == [
        "nope"
    ]
    # Secrets go in through a file, never the command line, and never come back.
    (d / "web2.env").write_text("# app settings\nAPI_TOKEN=tok-cli-123\nMODE=fast\n")
    r = await cli(
        "apps",
        HOST,
        "register",
        "web2",
        "--env-file",
        str(d / "web2.env"),
        "--json",
        "--",
        APP_PYTHON,
        str(d / "app.py"),
        role="admin",
    )
    changed = time.monotonic()
    assert r.rc == 0, r
    spec = r.json()["app"]["spec"]
    assert spec["env"] == {"API_TOKEN": "***", "MODE": "fast"} and spec["run"] == {
        "runtime": "binary",
        "argv": [APP_PYTHON, str(d / "app.py")],
    }
    assert "tok-cli-123" not in r.out + r.err
    assert (await cli("apps", HOST, "remove", "web2", role="operator")).rc == 1  # removing is an admin's
    await after_rate_window(changed)
    r = await cli("apps", HOST, "remove", "web2", role="admin")
    assert r.rc == 0 and "web2 on host-c: removed" in r.out

    assert (await cli("audit", role="viewer")).rc == 1  # the audit is an operator's read


async def test_logs_follow_prints_new_lines(stack):
    gw, cli, *_ = stack
    tail = await cli("apps", HOST, "logs", "web", "-n", "3", role="operator")
    assert tail.rc == 0 and tail.out.strip(), tail
    last_seen = int(tail.out.strip().splitlines()[-1].split()[1])

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetwatch",
        "apps",
        HOST,
        "logs",
        "web",
        "-f",
        "-n",
        "0",
        cwd=ROOT,
        env=cli.env("operator"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def newer() -> str:
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, (await proc.stderr.read()).decode()
                if line.startswith("tick ") and int(line.split()[1]) > last_seen:
                    return line

        line = await asyncio.wait_for(newer(), 30)
        assert line.startswith("tick ")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130  # Ctrl-C ends a follow
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    r = await cli("apps", HOST, "logs", "web", role="viewer")
    assert r.rc == 1 and "refused (403)" in r.err


async def test_jobs_run_wait_and_list(stack):
    gw, cli, *_ = stack
    r = await cli("jobs", HOST, "run", "--wait", "--", "/bin/echo", "hello from a job", role="operator")
    assert r.rc == 0 and "hello from a job" in r.out, r
    r = await cli(
        "jobs",
        HOST,
        "run",
        "--wait",
        "--",
        APP_PYTHON,
        "-c",
        "import sys; print('bad'); sys.exit(3)",
        role="admin",  # inline code is an admin's (tests/test_trust_policy.py)
    )
    assert r.rc == 1 and "bad" in r.out and "failed" in r.out, r
    listing = await cli("jobs", HOST, "--json", role="viewer")
    jobs = listing.json()["jobs"]
    assert [j["exit_code"] for j in jobs[:2]] == [3, 0]
    assert [j["id"] for j in jobs] == [
        j["id"] for j in (await api(gw, "viewer", f"/api/v1/hosts/{HOST}/jobs", limit=50))["jobs"]
    ]
    r = await cli("jobs", HOST, "run", "--", "/bin/echo", role="viewer")
    assert r.rc == 1 and "refused (403)" in r.err


async def test_sync_asks_the_replicator(stack):
    gw, cli, *_ = stack
    r = await cli("sync", HOST, "--timeout", "3", role="operator")
    assert r.rc == 1 and "unavailable (503): no replicator answers" in r.err  # none runs for host-c here
    r = await cli("sync", "--json", role="viewer")
    assert r.rc == 0 and r.json() == await api(gw, "viewer", "/api/v1/replication")


async def test_alerts_silences_checks_and_the_hosts_alert_column(stack):
    gw, cli, admin, sim, *_ = stack

    async def firing():
        await sim.publish(admin, [sim.frame("clisim-b")])
        r = await cli("alerts", "--json", role="viewer")
        assert r.rc == 0, r
        return r if any(a["state"] == "firing" for a in r.json()["items"]) else None

    r = await wait_until(firing, 30, interval=0.5, what="the rule firing for clisim-b")
    assert r.json() == await api(gw, "viewer", "/api/v1/alerts")
    assert [(a["rule"], a["host"]) for a in r.json()["items"]] == [("cli-busy", "clisim-b")]
    table = await cli("alerts", role="viewer")
    assert any(ln.split()[:4] == ["firing", "warning", "cli-busy", "clisim-b"] for ln in table.out.splitlines()), table
    hosts = await cli("hosts", role="viewer")
    alerts_col = {ln.split()[0]: ln.split()[6] for ln in hosts.out.splitlines() if ln.startswith("clisim-")}
    assert alerts_col == {"clisim-a": "0", "clisim-b": "1", "clisim-c": "0"}

    r = await cli(
        "silence",
        "add",
        "host=clisim-b",
        "rule=~cli-.*",
        "--for",
        "30m",
        "--comment",
        "maintenance",
        "--json",
        role="operator",
    )
    assert r.rc == 0, r
    sid = r.json()["id"]
    assert r.json()["created_by"] == gw.actor("operator") and r.json()["ends"] - r.json()["starts"] == pytest.approx(
        1800
    )
    listing = await cli("silence", role="viewer")
    assert any(
        ln.startswith(sid) and "host=clisim-b" in ln and "rule=~cli-.*" in ln for ln in listing.out.splitlines()
    ), listing
    r = await cli("silence", "add", "host=x", role="viewer")
    assert r.rc == 1 and "refused (403)" in r.err
    assert (await cli("silence", "add", "not a matcher", role="operator")).rc == 2
    assert (await cli("silence", "rm", sid, role="operator")).rc == 0
    assert sid not in (await cli("silence", role="viewer")).out

    r = await cli(
        "checks",
        "add",
        "cli-health",
        "http://127.0.0.1:9/health",
        "--interval",
        "2m",
        "--status",
        "200-204",
        role="operator",
    )
    assert r.rc == 0 and "every 2m00s" in r.out, r
    r = await cli("checks", "--json", role="viewer")
    check = next(c for c in r.json()["items"] if c["name"] == "cli-health")
    assert (check["interval_s"], check["status_min"], check["status_max"]) == (120.0, 200, 204)
    assert r.json()["items"] == (await api(gw, "viewer", "/api/v1/checks"))["items"]
    assert "cli-health" in (await cli("checks", role="viewer")).out
    assert (await cli("checks", "rm", "cli-health", role="operator")).rc == 0
    r = await cli("checks", "rm", "cli-health", role="operator")
    assert r.rc == 1 and "not found (404)" in r.err
    assert "cli-busy" in (await cli("rules", role="viewer")).out


async def test_usage_errors_exit_2_and_failures_exit_1(stack, tmp_path):
    gw, cli, *_ = stack
    assert (await cli("apps", role="viewer")).rc == 2  # HOST missing
    assert (await cli("no-such-command")).rc == 2
    assert (await cli("audit", "--since", "yesterday-ish", role="operator")).rc == 2
    r = await cli("users", "deactivate", "../auth/tokens", role="admin")  # a name is one URL segment, never a path
    assert r.rc == 2 and "not a valid name" in r.err
    r = await Cli(gw, tmp_path)("hosts")
    assert r.rc == 1 and "not logged in" in r.err
    r = await cli("hosts", FLEETWATCH_TOKEN="not-a-token")
    assert r.rc == 1 and "not authenticated (401): invalid or expired token" in r.err and "fleetwatch login" in r.err
    r = await cli("hosts", "--url", "http://127.0.0.1:9", role="viewer")
    assert r.rc == 1 and "cannot reach the gateway at http://127.0.0.1:9" in r.err
    # No URL anywhere: the dev stack (`make run`) of the current directory names its gateway.
    (tmp_path / ".fleetwatch").mkdir()
    (tmp_path / ".fleetwatch" / "stack.json").write_text(json.dumps({"gateway_port": int(gw.url.rsplit(":", 1)[1])}))
    r = await cli("whoami", role="viewer", cwd=tmp_path, FLEETWATCH_URL="")
    assert r.rc == 0 and f"at {gw.url}" in r.out, r


async def test_shell_completion_from_the_parser(stack):
    gw, cli, *_ = stack
    script = await cli("completion", "bash")
    assert script.rc == 0

    zsh_script = await cli("completion", "zsh")
    assert zsh_script.rc == 0 and "bashcompinit" in zsh_script.out
    # zsh runs the same function through bashcompinit; checked where zsh is installed.
    shells = [("bash", ["bash", "--norc", "-c"], script.out)] + (
        [("zsh", ["zsh", "-f", "-c"], zsh_script.out)] if shutil.which("zsh") else []
    )

    async def complete(shell: list[str], text: str, *words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        prog = (
            f'{text}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _fleetwatch; printf "%s\\n" "${{COMPREPLY[@]}}"'
        )
        proc = await asyncio.create_subprocess_exec(
            *shell, prog, env=cli.env("viewer"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return sorted(w for w in out.decode().split("\n") if w)

    for name, shell, text in shells:
        assert await complete(shell, text, "fleetwatch", "ap") == ["apps"], name
        assert "nats-config" in await complete(shell, text, "fleetwatch", "")  # the maintenance commands too
        assert await complete(shell, text, "fleetwatch", "apps", HOST, "re") == ["register", "remove", "restart"]
        assert await complete(shell, text, "fleetwatch", "users", "add", "bob", "--role", "") == [
            "admin",
            "operator",
            "viewer",
        ]
        assert await complete(shell, text, "fleetwatch", "top", "clisim-") == sorted(SIM_HOSTS), (
            name
        )  # live from the gateway
        assert "--follow" in await complete(shell, text, "fleetwatch", "apps", HOST, "logs", "web", "--")


def test_error_messages_name_the_status_and_what_to_do():
    from fleetwatch.cli.client import error_message

    assert error_message(
        504, {"status_code": 504, "detail": "the commander of host 'x' did not answer within 30s"}, {}
    ) == ("timed out (504): the commander of host 'x' did not answer within 30s")
    assert error_message(429, {"detail": "too many failed logins"}, {"retry-after": "12"}).endswith(
        "— retry after 12 s"
    )
    assert error_message(409, {"detail": "username or uid is taken"}, {}) == "conflict (409): username or uid is taken"
    assert error_message(
        400,
        {
            "detail": "Validation failed for POST /api/v1/users",
            "extra": [{"key": "username", "message": "Expected `str` matching regex"}],
        },
        {},
    ) == ("bad request (400): Validation failed for POST /api/v1/users (username: Expected `str` matching regex)")


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """What a pty's program wrote, until `needle` shows up or time is up."""
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                buf += os.read(fd, 65536)
            except OSError:
                break
    return buf


async def test_password_prompt_in_a_terminal_does_not_echo(stack, tmp_path):
    import pty

    gw, cli, *_ = stack
    password = "tty-typed-secret-9"
    assert (
        await cli(
            "users", "add", "ttyuser", "--role", "viewer", "--password-stdin", role="admin", stdin=password + "\n"
        )
    ).rc == 0
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetwatch",
        "login",
        "-u",
        "ttyuser",
        cwd=ROOT,
        env=Cli(gw, tmp_path).env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,  # the pty becomes its terminal, as getpass expects
    )
    os.close(slave)
    try:
        seen = await asyncio.to_thread(read_until, master, b"Password for ttyuser", 30)
        assert b"Password for ttyuser" in seen, seen
        os.write(master, password.encode() + b"\n")
        seen += await asyncio.to_thread(read_until, master, b"logged in", 30)
        assert await asyncio.wait_for(proc.wait(), 15) == 0, seen
        assert b"logged in to" in seen and password.encode() not in seen  # typed, never shown
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)


async def test_top_in_a_terminal_redraws_and_quits_on_q_or_ctrl_c(stack):
    """In a terminal (a pty here), top draws full screen, q quits with status 0 and the terminal's
    mode is restored; SIGINT (Ctrl-C) quits with 0 too."""
    import fcntl
    import pty
    import struct
    import termios

    gw, cli, *_ = stack
    env = cli.env("viewer")
    env.pop("COLUMNS", None)
    env["TERM"] = "xterm-256color"

    for key in (b"q", None):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 140, 0, 0))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleetwatch",
            "top",
            SIM_HOSTS[0],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        try:
            screen = await asyncio.to_thread(read_until, master, b"COMMAND", 30)
            assert b"COMMAND" in screen and b"\x1b[?1049h" in screen, screen[-2000:]  # full screen, process table drawn
            await asyncio.sleep(0.5)  # the key reader is in cbreak mode by now
            os.write(master, b"m")  # sort by memory, like top's M
            screen = await asyncio.to_thread(read_until, master, b"sorted by mem", 15)
            assert b"sorted by mem" in screen
            if key:
                os.write(master, key)
            else:
                proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
            assert termios.tcgetattr(master)[3] & termios.ICANON  # line mode is back
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(master)


async def test_https_gateway_with_the_ca_of_fleetwatch_certs(stack, tmp_path):
    """`fleetwatch certs` makes the CA; `login --ca-file` trusts it and saves it with the login;
    without it the certificate is refused with a sentence saying what to do."""
    from libs.embedded.natsserver import free_port

    gw, cli, _, _, d, dsn = stack
    r = await cli("certs", "--out", str(tmp_path / "certs"))
    assert r.rc == 0, r
    port = free_port()
    pw = tmp_path / "admin-password"
    pw.write_text(gw.admin_password + "\n")  # the admin exists already: this file is not used to make one
    env = service_env(
        **cli.nats_env,
        FLEETWATCH_DB_DSN=dsn,
        FLEETWATCH_GATEWAY_PORT=str(port),
        FLEETWATCH_GATEWAY_ADMIN_PASSWORD_FILE=str(pw),
        FLEETWATCH_GATEWAY_TLS_CERT=str(tmp_path / "certs" / "gateway.crt"),
        FLEETWATCH_GATEWAY_TLS_KEY=str(tmp_path / "certs" / "gateway.key"),
    )
    url = f"https://127.0.0.1:{port}"
    with open(tmp_path / "gateway.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    own = Cli(gw, tmp_path / "cfg")
    try:

        async def ready():
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            r = await own(
                "login",
                "--url",
                url,
                "-u",
                "admin",
                "--password-stdin",
                "--ca-file",
                str(tmp_path / "certs" / "ca.crt"),
                stdin=gw.admin_password + "\n",
                FLEETWATCH_URL="",
            )
            return r if r.rc == 0 else None

        await wait_until(ready, 60, interval=0.5, what="login to the https gateway")
        r = await own("hosts", "--json", FLEETWATCH_URL="")  # URL and CA from the saved login
        assert r.rc == 0 and {h["host"] for h in r.json()} >= set(SIM_HOSTS), r
        r = await Cli(gw, tmp_path / "nothing")("hosts", FLEETWATCH_URL=url, FLEETWATCH_TOKEN="x")
        assert r.rc == 1 and "certificate of https://127.0.0.1" in r.err and "--ca-file" in r.err
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_big_tables_are_laid_out_without_rich(capsys):
    """Thousands of hosts: aligned plain text in one pass (rich measured every cell for seconds)."""
    from rich.text import Text

    from fleetwatch.cli import output

    rows = [(f"h{i}", Text("online", style="green"), f"{i % 100}.0%", "x" * (i % 7)) for i in range(1000)]
    t = output.table(("HOST", "STATUS", "CPU", "NOTE"), rows, right=("CPU",))
    assert isinstance(t, output.PlainTable)
    output.show(t)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1001 and lines[0].split() == ["HOST", "STATUS", "CPU", "NOTE"]
    assert lines[1] == "h0    online   0.0%" and lines[999] == "h998  online  98.0%  xxxx"
    assert {ln.index("online") for ln in lines[1:]} == {6}  # one column, one position
    small = output.table(("HOST",), [("h1",)])
    assert not isinstance(small, output.PlainTable)


# -- nothing listening: one line, no traceback --------------------------------------------------

# One invocation of every fleet command (all of them talk to the gateway but `logout` and
# `completion`); a new command must be added here.
GATEWAY_COMMANDS = {
    "login": ["login", "-u", "admin", "--password-stdin"],
    "whoami": ["whoami"],
    "tokens": ["tokens"],
    "hosts": ["hosts"],
    "top": ["top", "h1"],
    "apps": ["apps", "h1", "logs", "web", "-f"],
    "jobs": ["jobs", "h1"],
    "alerts": ["alerts"],
    "silence": ["silence"],
    "checks": ["checks"],
    "rules": ["rules"],
    "users": ["users"],
    "sync": ["sync", "h1"],
    "audit": ["audit"],
}
OFFLINE_COMMANDS = {"logout", "completion"}


def _closed_port() -> int:
    """A port nothing listens on (bound for a moment to find it, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_clean_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and r.stdout == "", r
    return lines[0]


def test_every_fleet_command_says_in_one_line_that_the_gateway_is_unreachable(tmp_path):
    import argparse

    from fleetwatch import cli

    sub = argparse.ArgumentParser().add_subparsers()
    cli.register(sub)
    assert set(sub.choices) == set(GATEWAY_COMMANDS) | OFFLINE_COMMANDS
    url = f"http://127.0.0.1:{_closed_port()}"
    env = service_env(XDG_CONFIG_HOME=str(tmp_path), FLEETWATCH_URL=url, FLEETWATCH_TOKEN="a-token")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "fleetwatch", *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in GATEWAY_COMMANDS.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate("a-password\n", timeout=60)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert r.returncode == 1, (name, r)
        assert _one_clean_line(r) == (
            f"fleetwatch: error: cannot reach the gateway at {url} (connection refused); "
            "is `make run` up? (set --url or FLEETWATCH_URL to use another)"
        ), name


def test_simulate_says_in_one_line_that_nats_is_unreachable_or_refuses_it(nats_stack):
    def simulate(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fleetwatch", "simulate", "--hosts", "1", "--rounds", "1", *args],
            cwd=ROOT,
            env=service_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )

    url = f"nats://127.0.0.1:{_closed_port()}"
    r = simulate("--url", url)
    assert r.returncode == 1 and _one_clean_line(r) == (
        f"fleetwatch: error: cannot reach NATS at {url} (connection refused); "
        "is `make run` up? (set --url or FLEETWATCH_NATS_URL to use another)"
    )
    r = simulate(FLEETWATCH_NATS_URL=url)  # the setting, as an env file gives it
    assert r.returncode == 1 and f"cannot reach NATS at {url} (connection refused)" in _one_clean_line(r)
    r = simulate(FLEETWATCH_NATS_URL=nats_stack.url, FLEETWATCH_NATS_USER="simulator", FLEETWATCH_NATS_PASSWORD="wrong")
    assert r.returncode == 1
    line = _one_clean_line(r)
    assert line.startswith(f"fleetwatch: error: NATS at {nats_stack.url} refused the login of simulator"), line
    assert "FLEETWATCH_NATS_PASSWORD" in line and "simulator.env" in line
    r = simulate("--credentials", str(ROOT / "no-such-file.json"))
    assert r.returncode == 2 and "cannot read the credentials file" in _one_clean_line(r)
