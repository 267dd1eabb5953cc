"""The commander's systemd backend against a real systemd, booted as PID 1 of a private namespace
(tests/support/systemd_ns.py): generated units, systemctl, reconciliation, journald logs, and
the 403 a commander without privileges answers. The commander runs inside the namespace, so
systemctl, journalctl and the PIDs it reports are that systemd's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from libs.schemas import AppStatus, AuditRecord, LogBatch, subjects
from libs.schemas.control import AppReply, LogsReply
from tests.conftest import service_env
from tests.support.commander import CommanderProcess, CtlFailed, ctl
from tests.support.systemd_ns import SystemdNamespace, available

HOST = "host-c"
NODE = "/usr/bin/node"
APPS = "/run/fleetwatch-apps"  # inside the namespace (private tmpfs)
UNIT_DIR = "/run/systemd/system"  # runtime units: private to the namespace

pytestmark = pytest.mark.skipif(bool(available()), reason=f"systemd namespace unavailable: {available()}")

PY_APP = """
import time
for i in range(10):
    print(f"sd line {i}")
while True:
    time.sleep(0.2)
"""
NODE_APP = """
for (let i = 0; i < 10; i++) console.log(`sd node line ${i}`);
setInterval(() => {}, 1000);
"""
FAIL_APP = "import sys\nprint('failing')\nsys.exit(3)\n"


class Collector:
    def __init__(self, type_):
        self.type = type_
        self.items: list = []

    async def cb(self, msg):
        import msgspec

        self.items.append(msgspec.json.decode(msg.data, type=self.type))

    async def wait_for(self, pred, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for it in self.items:
                if pred(it):
                    return it
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing matched in {len(self.items)} items: {self.items[-6:]}")


@pytest.fixture(scope="module")
def ns(workdir):
    with SystemdNamespace(log_path=workdir / "systemd-ns.log") as n:
        d = n.path(APPS)
        d.mkdir(parents=True)
        (d / "app.py").write_text(PY_APP)
        (d / "app.js").write_text(NODE_APP)
        (d / "fail.py").write_text(FAIL_APP)
        yield n


@pytest.fixture(scope="module")
async def sd_commander(ns, nats_stack, workdir):
    cp = CommanderProcess(
        service_env(**nats_stack.env(host=HOST)),
        state_dir=__import__("pathlib").Path("/run/fleetwatch-commander"),  # inside the namespace
        log_path=workdir / "commander-systemd.log",
        argv_prefix=ns.enter([]),
        unit_dir=UNIT_DIR,
    ).start()
    yield cp
    cp.kill()


@pytest.fixture
async def sd(sd_commander, nc, ns):
    await sd_commander.wait_ready(nc, HOST)
    names: list[str] = []
    yield names
    for name in names:
        await asyncio.sleep(1.05)
        try:
            await ctl(nc, HOST, "apps.remove", {"actor": "cleanup", "name": name})
        except CtlFailed:
            pass


def ns_alive(ns, pid) -> bool:
    if not pid:
        return False
    r = ns.run(["ps", "-o", "stat=", "-p", str(pid)], check=False)
    return r.returncode == 0 and r.stdout.strip()[:1] not in ("Z", "")


async def status(nc, name):
    return (await ctl(nc, HOST, "apps.status", {"actor": "alice", "name": name}, AppReply)).app


async def wait_state(nc, name, states, timeout=20.0):
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = await status(nc, name)
        if info.state in states:
            return info
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached {states}; last {info}")


async def op(nc, verb, name):
    await asyncio.sleep(1.05)  # one operation per app per second
    return (await ctl(nc, HOST, verb, {"actor": "alice", "name": name}, AppReply)).app


def py_run(script="app.py"):
    return {"runtime": "python", "script": f"{APPS}/{script}", "interpreter": sys.executable}


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_systemd_unit_start_stop_restart(sd, nc, ns, runtime):
    name = f"sd-{runtime}"
    run = py_run() if runtime == "python" else {"runtime": "node", "script": f"{APPS}/app.js", "interpreter": NODE}
    r = await ctl(nc, HOST, "apps.register", {"actor": "alice", "spec": {"name": name, "backend": "systemd", "run": run, "cwd": APPS, "env": {"GREETING": "hi there", "DB_PASSWORD": "pw-xyz-123"}}}, AppReply)
    sd.append(name)
    assert r.app.unit == f"fleetwatch-{name}.service" and r.app.state == "stopped"
    unit = ns.path(f"{UNIT_DIR}/fleetwatch-{name}.service").read_text()
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=full" in unit and "Type=simple" in unit
    assert f'ExecStart="{run["interpreter"]}" "{APPS}/{"app.py" if runtime == "python" else "app.js"}"' in unit
    assert 'Environment="GREETING=hi there"' in unit
    assert "enabled" in ns.run(["systemctl", "is-enabled", f"fleetwatch-{name}.service"], check=False).stdout
    assert "pw-xyz-123" not in str(r)  # replies mask secrets

    await op(nc, "apps.start", name)
    info = await wait_state(nc, name, {"running"})
    pid = info.pid
    assert ns_alive(ns, pid) and info.unit_state == "active/running"
    assert ns.run(["systemctl", "show", "-P", "MainPID", f"fleetwatch-{name}.service"]).stdout.strip() == str(pid)

    info = await op(nc, "apps.restart", name)
    info = await wait_state(nc, name, {"running"})
    assert info.pid != pid and ns_alive(ns, info.pid) and not ns_alive(ns, pid)

    info = await op(nc, "apps.stop", name)
    assert info.state == "stopped" and not ns_alive(ns, pid)
    assert ns.run(["systemctl", "is-active", f"fleetwatch-{name}.service"], check=False).stdout.strip() == "inactive"


async def test_systemd_kill9_crashed_then_restarted_and_quick_failures_failed(sd, nc, ns):
    events = Collector(AppStatus)
    sub = await nc.subscribe(subjects.apps(HOST), cb=events.cb)
    name = "sd-crash"
    await ctl(nc, HOST, "apps.register", {"actor": "alice", "spec": {"name": name, "backend": "systemd", "run": py_run(), "restart": "always", "backoff_s": 3}, "start": True})
    sd.append(name)
    first = await wait_state(nc, name, {"running"})
    ns.run(["kill", "-9", str(first.pid)])
    crashed = await events.wait_for(lambda e: e.app == name and e.state == "crashed")
    assert crashed.pid is None
    back = await events.wait_for(lambda e: e.app == name and e.state == "running" and e.pid not in (None, first.pid))
    assert ns_alive(ns, back.pid)
    info = await status(nc, name)
    assert info.restarts >= 1

    name2 = "sd-fatal"
    await ctl(nc, HOST, "apps.register", {"actor": "alice", "spec": {"name": name2, "backend": "systemd", "run": py_run("fail.py"), "restart": "always", "backoff_s": 0.2, "max_retries": 2}, "start": True})
    sd.append(name2)
    failed = await events.wait_for(lambda e: e.app == name2 and e.state == "failed", timeout=30)
    assert "start-limit-hit" in failed.detail or "exit-code" in failed.detail
    await sub.unsubscribe()


async def test_systemd_zombie_when_process_runs_outside_its_stopped_unit(sd, nc, ns):
    events = Collector(AppStatus)
    sub = await nc.subscribe(subjects.apps(HOST), cb=events.cb)
    name = "sd-zombie"
    await ctl(nc, HOST, "apps.register", {"actor": "alice", "spec": {"name": name, "backend": "systemd", "run": py_run()}, "start": True})
    sd.append(name)
    await wait_state(nc, name, {"running"})
    await op(nc, "apps.stop", name)
    # A stray copy of the app, started by hand: the unit is inactive but the program runs.
    stray = subprocess.Popen(ns.enter([sys.executable, f"{APPS}/app.py"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        z = await events.wait_for(lambda e: e.app == name and e.state == "zombie")
        assert z.pid and ns_alive(ns, z.pid)
    finally:
        stray.kill()  # nsenter's child goes with the namespace's kill below
        ns.run(["pkill", "-KILL", "-f", f"{APPS}/app.py"], check=False)
        stray.wait()
    await events.wait_for(lambda e: e.app == name and e.state == "stopped" and e.ts > z.ts)
    await sub.unsubscribe()


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_journald_tail_and_follow(sd, nc, ns, runtime):
    name = f"sd-logs-{runtime}"
    run = py_run() if runtime == "python" else {"runtime": "node", "script": f"{APPS}/app.js", "interpreter": NODE}
    prefix = "sd line" if runtime == "python" else "sd node line"
    await ctl(nc, HOST, "apps.register", {"actor": "alice", "spec": {"name": name, "backend": "systemd", "run": run}})
    sd.append(name)
    batches = Collector(LogBatch)
    sub = await nc.subscribe(subjects.logs(HOST, name), cb=batches.cb)
    r = await ctl(nc, HOST, "apps.logs", {"actor": "bob", "name": name, "lines": 5, "follow": True, "lease_s": 30}, LogsReply)
    assert r.subject == subjects.logs(HOST, name)
    await asyncio.sleep(0.5)  # journalctl -f is attached
    await op(nc, "apps.start", name)
    want = [f"{prefix} {i}" for i in range(10)]

    def followed():
        return [ln for b in batches.items for ln in b.lines if ln.line.startswith(prefix)]

    deadline = time.monotonic() + 20
    while len(followed()) < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    got = followed()
    assert [ln.line for ln in got[:10]] == want
    assert all(ln.level == "info" and ln.ts > time.time() - 120 for ln in got)
    tail = await ctl(nc, HOST, "apps.logs", {"actor": "bob", "name": name, "lines": 200}, LogsReply)
    assert [ln.line for ln in tail.lines if ln.line.startswith(prefix)][:10] == want
    await sub.unsubscribe()
    await op(nc, "apps.stop", name)


async def test_missing_privileges_answer_403_with_sudoers_line(ns, nats_stack, nc, workdir, sd_commander):
    state = "/run/fc-unprivileged"
    units = "/run/fc-units"
    for d in (state, units):
        ns.run(["install", "-d", "-o", "nobody", "-m", "700", d])
    audits = Collector(AuditRecord)
    sub = await nc.subscribe(subjects.audit("local"), cb=audits.cb)
    cp = CommanderProcess(
        service_env(**nats_stack.env(host="local")),
        state_dir=__import__("pathlib").Path(state),
        log_path=workdir / "commander-nobody.log",
        argv_prefix=ns.enter(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]),
        unit_dir=units,
    ).start()
    try:
        await cp.wait_ready(nc, "local")
        with pytest.raises(CtlFailed) as ei:
            await ctl(nc, "local", "apps.register", {"actor": "alice", "spec": {"name": "sd-priv", "backend": "systemd", "run": {"runtime": "node", "script": f"{APPS}/app.js", "interpreter": NODE}}})
        assert ei.value.code == 403
        assert "sudoers" in ei.value.message and "NOPASSWD" in ei.value.message and "systemctl" in ei.value.message
        rec = await audits.wait_for(lambda a: a.action == "apps.register" and a.target == "sd-priv")
        assert rec.code == 403 and rec.actor == "alice"
    finally:
        await sub.unsubscribe()
        cp.kill()


def test_namespace_is_isolated_from_the_machine(ns, tmp_path_factory):
    # Only basic.target's own units run: no stock service (PostgreSQL, cron, getty...) was started.
    active = ns.run(["systemctl", "list-units", "--type=service", "--state=active", "--no-legend", "--plain"]).stdout.split()
    services = {w for w in active if w.endswith(".service")}
    # dbus and polkit are socket/bus-activated inside by the unprivileged commander's systemctl calls.
    allowed = {"systemd-journald.service", "dbus.service", "polkit.service"}
    assert services <= allowed | {w for w in services if w.startswith("fleetwatch-")}, services
    assert ns.run(["systemctl", "is-active", "postgresql.service"], check=False).stdout.strip() != "active"
    # /tmp, /run, /var/tmp inside are private: a file on the machine's /tmp is not visible inside,
    # and systemd's tmpfiles never ran on the machine's /tmp (the file is still there).
    marker = tmp_path_factory.mktemp("ns-marker") / "keep-me"
    marker.write_text("x")
    assert ns.run(["test", "-e", str(marker)], check=False).returncode != 0
    assert marker.exists()
    assert ns.run(["findmnt", "-n", "-o", "FSTYPE", "/tmp"]).stdout.strip() == "tmpfs"
    assert ns.run(["findmnt", "-n", "-o", "FSTYPE", "/run"]).stdout.strip() == "tmpfs"
    # its PID 1 is systemd, and the machine's processes are invisible
    assert ns.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    import psutil

    inside = [line for line in ns.run(["ps", "-e", "-o", "comm="]).stdout.splitlines() if line.strip()]
    assert "pytest" not in " ".join(inside) and len(inside) < len(psutil.pids())
