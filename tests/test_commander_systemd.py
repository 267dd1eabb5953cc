"""The commander's systemd backend against a real systemd, booted as PID 1 of a private namespace
(tests/support/systemd_ns.py): generated units, systemctl, reconciliation, journald logs, and
the 403 a commander without privileges answers. The commander runs inside the namespace, so
systemctl, journalctl and the PIDs it reports are that systemd's."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from libs.schemas import AppStatus, AuditRecord, LogBatch, subjects
from libs.schemas.control import LogsReply
from tests.conftest import ROOT, service_env
from tests.support.commander import (
    APP_PYTHON,
    AS_NOBODY,
    Collector,
    CommanderProcess,
    CtlFailed,
    app_op,
    app_status,
    ctl,
    register_app,
    remove_apps,
    wait_state,
    write_apps,
)
from tests.support.systemd_ns import SystemdNamespace, available

HOST = "host-c"
NODE = "/usr/bin/node"
APPS = "/run/fleetwatch-apps"  # inside the namespace (private tmpfs)
UNIT_DIR = "/run/systemd/system"  # runtime units: private to the namespace

pytestmark = pytest.mark.skipif(bool(available()), reason=f"systemd namespace unavailable: {available()}")


@pytest.fixture(scope="module")
def ns(workdir):
    with SystemdNamespace(log_path=workdir / "systemd-ns.log") as n:
        write_apps(n.path(APPS), "sd line", "sd node line")
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
    await remove_apps(nc, HOST, names)


def ns_alive(ns, pid) -> bool:
    if not pid:
        return False
    r = ns.run(["ps", "-o", "stat=", "-p", str(pid)], check=False)
    return r.returncode == 0 and r.stdout.strip()[:1] not in ("Z", "")


def py_run(script="app.py"):
    return {"runtime": "python", "script": f"{APPS}/{script}", "interpreter": APP_PYTHON}


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_systemd_unit_start_stop_restart(sd, nc, ns, runtime):
    name = f"sd-{runtime}"
    run = py_run() if runtime == "python" else {"runtime": "node", "script": f"{APPS}/app.js", "interpreter": NODE}
    r = await register_app(
        nc,
        HOST,
        {
            "name": name,
            "backend": "systemd",
            "run": run,
            "cwd": APPS,
            "env": {"GREETING": "hi there", "DB_PASSWORD": "pw-xyz-123"},
        },
    )
    sd.append(name)
    assert r.unit == f"fleetwatch-{name}.service" and r.state == "stopped"
    unit = ns.path(f"{UNIT_DIR}/fleetwatch-{name}.service").read_text()
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=full" in unit and "Type=simple" in unit
    assert f'ExecStart="{run["interpreter"]}" "{APPS}/{"app.py" if runtime == "python" else "app.js"}"' in unit
    assert 'Environment="GREETING=hi there"' in unit
    assert "enabled" in ns.run(["systemctl", "is-enabled", f"fleetwatch-{name}.service"], check=False).stdout
    assert "pw-xyz-123" not in str(r)  # replies mask secrets

    await app_op(nc, HOST, "apps.start", name)
    info = await wait_state(nc, HOST, name, {"running"})
    pid = info.pid
    assert ns_alive(ns, pid) and info.unit_state == "active/running"
    assert ns.run(["systemctl", "show", "-P", "MainPID", f"fleetwatch-{name}.service"]).stdout.strip() == str(pid)

    info = await app_op(nc, HOST, "apps.restart", name)
    info = await wait_state(nc, HOST, name, {"running"})
    assert info.pid != pid and ns_alive(ns, info.pid) and not ns_alive(ns, pid)

    info = await app_op(nc, HOST, "apps.stop", name)
    assert info.state == "stopped" and not ns_alive(ns, pid)
    assert ns.run(["systemctl", "is-active", f"fleetwatch-{name}.service"], check=False).stdout.strip() == "inactive"


async def test_systemd_kill9_crashed_then_restarted_and_quick_failures_failed(sd, nc, ns):
    async with Collector(nc, subjects.apps(HOST), AppStatus) as events:
        name = "sd-crash"
        sd.append(name)
        await register_app(
            nc,
            HOST,
            {"name": name, "backend": "systemd", "run": py_run(), "restart": "always", "backoff_s": 3},
            start=True,
        )
        first = await wait_state(nc, HOST, name, {"running"})
        ns.run(["kill", "-9", str(first.pid)])
        crashed = await events.wait_for(lambda e: e.app == name and e.state == "crashed")
        assert crashed.pid is None
        back = await events.wait_for(
            lambda e: e.app == name and e.state == "running" and e.pid not in (None, first.pid)
        )
        assert ns_alive(ns, back.pid)
        info = await app_status(nc, HOST, name)
        assert info.restarts >= 1

        name2 = "sd-fatal"
        sd.append(name2)
        await register_app(
            nc,
            HOST,
            {
                "name": name2,
                "backend": "systemd",
                "run": py_run("fail.py"),
                "restart": "always",
                "backoff_s": 0.2,
                "max_retries": 2,
            },
            start=True,
        )
        failed = await events.wait_for(lambda e: e.app == name2 and e.state == "failed", timeout=30)
        assert "start-limit-hit" in failed.detail or "exit-code" in failed.detail


async def test_systemd_zombie_when_process_runs_outside_its_stopped_unit(sd, nc, ns):
    name = "sd-zombie"
    sd.append(name)
    await register_app(nc, HOST, {"name": name, "backend": "systemd", "run": py_run()}, start=True)
    await wait_state(nc, HOST, name, {"running"})
    await app_op(nc, HOST, "apps.stop", name)
    async with Collector(nc, subjects.apps(HOST), AppStatus) as events:
        # A stray copy of the app, started by hand: the unit is inactive but the program runs.
        stray = subprocess.Popen(
            ns.enter([APP_PYTHON, f"{APPS}/app.py"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            z = await events.wait_for(lambda e: e.app == name and e.state == "zombie")
            assert z.pid and ns_alive(ns, z.pid)
        finally:
            stray.kill()  # nsenter's child goes with the namespace's kill below
            ns.run(["pkill", "-KILL", "-f", f"{APPS}/app.py"], check=False)
            stray.wait()
        await events.wait_for(lambda e: e.app == name and e.state == "stopped" and e.ts > z.ts)


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_journald_tail_and_follow(sd, nc, ns, runtime):
    name = f"sd-logs-{runtime}"
    run = py_run() if runtime == "python" else {"runtime": "node", "script": f"{APPS}/app.js", "interpreter": NODE}
    prefix = "sd line" if runtime == "python" else "sd node line"
    sd.append(name)
    await register_app(nc, HOST, {"name": name, "backend": "systemd", "run": run})
    want = [f"{prefix} {i}" for i in range(10)]

    def followed():
        return [ln for b in batches.items for ln in b.lines if ln.line.startswith(prefix)]

    async with Collector(nc, subjects.logs(HOST, name), LogBatch) as batches:
        r = await ctl(
            nc, HOST, "apps.logs", {"actor": "bob", "name": name, "lines": 5, "follow": True, "lease_s": 30}, LogsReply
        )
        assert r.subject == subjects.logs(HOST, name)
        await asyncio.sleep(0.5)  # journalctl -f is attached
        await app_op(nc, HOST, "apps.start", name)
        await batches.wait_for(lambda _: len(followed()) >= 10, timeout=20)
    got = followed()
    assert [ln.line for ln in got[:10]] == want
    assert all(ln.level == "info" and ln.ts > time.time() - 120 and ln.stream == "journal" for ln in got)
    await asyncio.sleep(1.0)
    read_at = time.time()
    tail = await ctl(nc, HOST, "apps.logs", {"actor": "bob", "name": name, "lines": 200}, LogsReply)
    mine = [ln for ln in tail.lines if ln.line.startswith(prefix)][:10]
    assert [ln.line for ln in mine] == want
    # a tail's lines carry the time journald got them, as the followed ones do, not the read's
    assert [ln.ts for ln in mine] == [ln.ts for ln in got[:10]] and all(ln.ts < read_at - 0.9 for ln in mine)
    assert all(ln.stream == "journal" for ln in mine)  # journald keeps no stdout/stderr apart


async def test_missing_privileges_answer_403_with_sudoers_line(ns, nats_stack, nc, workdir, sd_commander):
    state = "/run/fc-unprivileged"
    units = "/run/fc-units"
    for d in (state, units):
        ns.run(["install", "-d", "-o", "nobody", "-m", "700", d])
    cp = CommanderProcess(
        service_env(**nats_stack.env(host="local")),
        state_dir=__import__("pathlib").Path(state),
        log_path=workdir / "commander-nobody.log",
        argv_prefix=ns.enter(AS_NOBODY),
        unit_dir=units,
    ).start()
    try:
        await cp.wait_ready(nc, "local")
        async with Collector(nc, subjects.audit("local"), AuditRecord) as audits:
            with pytest.raises(CtlFailed) as ei:
                await ctl(
                    nc,
                    "local",
                    "apps.register",
                    {
                        "actor": "alice",
                        "role": "admin",  # registering is an admin's: the refusal tested is systemd's
                        "spec": {
                            "name": "sd-priv",
                            "backend": "systemd",
                            "run": {"runtime": "node", "script": f"{APPS}/app.js", "interpreter": NODE},
                        },
                    },
                )
            assert ei.value.code == 403
            assert "sudoers" in ei.value.message and "NOPASSWD" in ei.value.message and "systemctl" in ei.value.message
            rec = await audits.wait_for(lambda a: a.action == "apps.register" and a.target == "sd-priv")
            assert rec.code == 403 and rec.actor == "alice"
    finally:
        cp.kill()


def test_namespace_is_isolated_from_the_machine(ns, tmp_path_factory):
    # Only basic.target's own units run: no stock service (PostgreSQL, cron, getty...) was started.
    active = ns.run(
        ["systemctl", "list-units", "--type=service", "--state=active", "--no-legend", "--plain"]
    ).stdout.split()
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
    # ...except the code the tests run, bound back at its own path (a checkout under /tmp).
    assert ns.run(["test", "-f", str(ROOT / "services" / "commander" / "__main__.py")], check=False).returncode == 0
    assert ns.run(["findmnt", "-n", "-o", "FSTYPE", "/tmp"]).stdout.strip() == "tmpfs"
    assert ns.run(["findmnt", "-n", "-o", "FSTYPE", "/run"]).stdout.strip() == "tmpfs"
    # its PID 1 is systemd, and the machine's processes are invisible
    assert ns.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    import psutil

    inside = [line for line in ns.run(["ps", "-e", "-o", "comm="]).stdout.splitlines() if line.strip()]
    assert "pytest" not in " ".join(inside) and len(inside) < len(psutil.pids())
