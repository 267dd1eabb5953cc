"""The commander's process backend, jobs, scan, validation, rate limit and audit, against a real
commander subprocess (as agent-host-a), real NATS, real Python and Node child processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import msgspec
import pytest

from libs.schemas import AppStatus, AuditRecord, LogBatch, subjects
from libs.schemas.control import AppListReply, AppReply, JobListReply, JobLogsReply, JobReply, LogsReply, ScanReply
from tests.conftest import service_env
from tests.support.commander import (
    APP_PYTHON,
    Collector,
    CommanderProcess,
    CtlFailed,
    app_op,
    app_status,
    ctl,
    kill_tree_pids,
    past_rate_limit,
    pid_alive,
    register_app,
    remove_apps,
    wait_pid_gone,
    wait_state,
    write_apps,
)

HOST = "host-a"
NODE = "/usr/bin/node"


@pytest.fixture(scope="module")
def appdir(workdir):
    return write_apps(workdir / "commander-apps", "py line", "node line")


@pytest.fixture(scope="module")
async def commander(nats_stack, workdir):
    state = workdir / "commander-state-a"
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), state, workdir / "commander-a.log").start()
    yield cp
    cp.stop()
    cp.kill_children()


@pytest.fixture
async def cmd(commander, nc):
    await commander.wait_ready(nc, HOST)
    started: list[str] = []
    yield commander, started
    await remove_apps(nc, HOST, started)  # leave nothing running


async def register(nc, started, name, run, adopt_pid=None, **spec):
    info = await register_app(
        nc, HOST, {"name": name, "run": run, **spec}, **({"adopt_pid": adopt_pid} if adopt_pid else {})
    )
    started.append(name)
    return info


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_app_start_stop_restart(cmd, nc, appdir, runtime):
    _, started = cmd
    name = f"lifecycle-{runtime}"
    run = (
        {"runtime": "python", "script": str(appdir / "app.py"), "interpreter": APP_PYTHON}
        if runtime == "python"
        else {"runtime": "node", "script": str(appdir / "app.js"), "interpreter": NODE}
    )
    r = await register(nc, started, name, run, cwd=str(appdir))
    assert r.state == "stopped" and r.pid is None

    info = await app_op(nc, HOST, "apps.start", name)
    pid = info.pid
    assert pid and pid_alive(pid)
    info = await wait_state(nc, HOST, name, {"running"})
    assert info.pid == pid and info.rss and info.rss > 0

    with pytest.raises(CtlFailed) as ei:
        await past_rate_limit(nc, HOST, "apps.start", {"actor": "alice", "name": name})
    assert ei.value.code == 409

    info = await app_op(nc, HOST, "apps.restart", name)
    assert info.pid and info.pid != pid
    assert wait_pid_gone(pid, 10)
    new_pid = info.pid
    assert pid_alive(new_pid)

    info = await app_op(nc, HOST, "apps.stop", name)
    assert info.state == "stopped" and info.pid is None
    assert wait_pid_gone(new_pid, 10)


def run_of(runtime: str, appdir) -> dict:
    if runtime == "python":
        return {"runtime": "python", "script": str(appdir / "app.py"), "interpreter": APP_PYTHON}
    return {"runtime": "node", "script": str(appdir / "app.js"), "interpreter": NODE}


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_kill9_autorestarts_with_backoff_then_status_events(cmd, nc, appdir, runtime):
    _, started = cmd
    name = f"restarter-{runtime}"
    await register(nc, started, name, run_of(runtime, appdir), restart="always", backoff_s=1.0, min_uptime_s=0.3)
    async with Collector(nc, subjects.apps(HOST), AppStatus) as events:
        await app_op(nc, HOST, "apps.start", name)
        first = await wait_state(nc, HOST, name, {"running"})
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        back = await events.wait_for(lambda e: e.app == name and e.state == "backoff")
        assert "signal 9" in back.detail
        again = await events.wait_for(
            lambda e: e.app == name and e.state == "starting" and e.pid not in (None, first.pid)
        )
    # The first restart waits backoff_s (±20 % jitter) — not immediately.
    assert again.ts - killed_at >= 0.7, again.ts - killed_at
    info = await wait_state(nc, HOST, name, {"running"})
    assert info.restarts == 1 and info.pid == again.pid and pid_alive(info.pid)


async def test_quick_failures_end_in_fatal(cmd, nc, appdir):
    _, started = cmd
    name = "crashy"
    await register(
        nc,
        started,
        name,
        {"runtime": "python", "script": str(appdir / "fail.py"), "interpreter": APP_PYTHON},
        restart="always",
        max_retries=2,
        backoff_s=0.2,
        min_uptime_s=5.0,
    )  # generous: a loaded box starts python slowly
    async with Collector(nc, subjects.apps(HOST), AppStatus) as events:
        await app_op(nc, HOST, "apps.start", name)
        fatal = await events.wait_for(lambda e: e.app == name and e.state == "fatal", timeout=20)
        assert "3 quick failures" in fatal.detail and "code 3" in fatal.detail
        await asyncio.sleep(1.0)  # fatal stays down
        starts = [e for e in events.items if e.app == name and e.state == "starting"]
        assert len(starts) == 3  # the first start + max_retries restarts
    info = await app_status(nc, HOST, name)
    assert info.state == "fatal" and info.pid is None


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_logs_tail_and_follow_first_ten_lines(cmd, nc, appdir, runtime):
    _, started = cmd
    name = f"talker-{runtime}"
    await register(nc, started, name, run_of(runtime, appdir))
    want = [f"{'py' if runtime == 'python' else 'node'} line {i}" for i in range(10)]
    async with Collector(nc, subjects.logs(HOST, name), LogBatch) as batches:
        r = await ctl(
            nc, HOST, "apps.logs", {"actor": "bob", "name": name, "lines": 10, "follow": True, "lease_s": 20}, LogsReply
        )
        assert r.subject == subjects.logs(HOST, name) and r.lease_until > time.time()
        await app_op(nc, HOST, "apps.start", name)
        await batches.wait_for(lambda _: [ln.line for b in batches.items for ln in b.lines][:10] == want, timeout=15)
    tail = await ctl(nc, HOST, "apps.logs", {"actor": "bob", "name": name, "lines": 10}, LogsReply)
    assert [ln.line for ln in tail.lines] == want


async def test_log_lines_keep_their_stream_and_write_time(cmd, nc, appdir):
    """Each line of a tail and of a follow says the stream it was written on and when it was
    written (issue 15: all were `stdout`, stamped with the time they were read)."""
    _, started = cmd
    script = appdir / "streams.py"
    script.write_text(
        "import sys, time\nprint('to out', flush=True)\nprint('to err', file=sys.stderr, flush=True)\n"
        "time.sleep(2.5)\nprint('late err', file=sys.stderr, flush=True)\nwhile True:\n    time.sleep(0.2)\n"
    )
    await register(nc, started, "streams", {"runtime": "python", "script": str(script), "interpreter": APP_PYTHON})
    began = time.time()
    await app_op(nc, HOST, "apps.start", "streams")
    await asyncio.sleep(1.5)
    read_at = time.time()
    tail = await ctl(nc, HOST, "apps.logs", {"actor": "bob", "name": "streams", "lines": 10}, LogsReply)
    by_line = {ln.line: ln for ln in tail.lines}
    assert by_line["to out"].stream == "stdout" and by_line["to err"].stream == "stderr", tail.lines
    for ln in tail.lines:
        assert began - 0.5 <= ln.ts <= read_at - 1.0, (ln, began, read_at)
    async with Collector(nc, subjects.logs(HOST, "streams"), LogBatch) as batches:
        await ctl(nc, HOST, "apps.logs", {"actor": "bob", "name": "streams", "follow": True, "lease_s": 10}, LogsReply)
        got = await batches.wait_for(lambda b: any(ln.line == "late err" for ln in b.lines), timeout=10)
    late = next(ln for ln in got.lines if ln.line == "late err")
    assert late.stream == "stderr" and began + 2.0 <= late.ts <= time.time(), late


async def test_validation_rate_limit_and_audit_records(cmd, nc, appdir):
    _, started = cmd
    async with Collector(nc, subjects.audit(HOST), AuditRecord) as audits:
        await refusals_limit_and_secrets_are_audited(nc, started, appdir, audits)


async def refusals_limit_and_secrets_are_audited(nc, started, appdir, audits):
    cases = {
        "missing script": {"name": "v1", "run": {"runtime": "python", "script": str(appdir / "nope.py")}},
        "missing user": {
            "name": "v2",
            "run": {"runtime": "python", "script": str(appdir / "app.py")},
            "user": "no-such-user-x",
        },
        "bad env name": {
            "name": "v3",
            "run": {"runtime": "python", "script": str(appdir / "app.py")},
            "env": {"1BAD-NAME": "x"},
        },
        "denylisted": {"name": "v4", "run": {"runtime": "binary", "argv": ["rm", "-rf", str(appdir / "x")]}},
        "shell": {"name": "v5", "run": {"runtime": "binary", "argv": ["/bin/sh", "-c", "echo hi"]}},
    }
    reasons = {}
    for label, spec in cases.items():
        with pytest.raises(CtlFailed) as ei:
            await ctl(nc, HOST, "apps.register", {"actor": "mallory", "spec": spec})
        assert ei.value.code == 400, (label, ei.value)
        reasons[label] = ei.value.message
    assert "does not exist" in reasons["missing script"] and "nope.py" in reasons["missing script"]
    assert "no-such-user-x" in reasons["missing user"]
    assert "1BAD-NAME" in reasons["bad env name"]
    assert "denylist" in reasons["denylisted"] and "denylist" in reasons["shell"]

    await register(
        nc,
        started,
        "limited",
        {"runtime": "python", "script": str(appdir / "app.py"), "interpreter": APP_PYTHON},
        env={"API_TOKEN": "tok-secret-123"},
    )
    await asyncio.sleep(1.05)  # mallory's start must pass at her first try: every try is audited
    await ctl(nc, HOST, "apps.start", {"actor": "mallory", "name": "limited"})
    with pytest.raises(CtlFailed) as ei:
        await ctl(nc, HOST, "apps.stop", {"actor": "mallory", "name": "limited"})
    assert ei.value.code == 429 and "retry" in ei.value.message
    with pytest.raises(CtlFailed) as ei:
        await ctl(nc, HOST, "apps.start", {"actor": "mallory", "name": "ghost"})
    assert ei.value.code == 404

    mine = lambda: [a for a in audits.items if a.actor == "mallory"]  # noqa: E731
    deadline = time.monotonic() + 10
    while len(mine()) < 8 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    recs = mine()
    assert len(recs) == 8, [(a.action, a.code) for a in recs]
    assert sorted(a.code for a in recs) == [200, 400, 400, 400, 400, 400, 404, 429]
    assert all(a.host == HOST and a.source == "nats" for a in recs)  # no gateway named a door
    refused = [a for a in recs if a.code == 400]
    assert {a.target for a in refused} == {"v1", "v2", "v3", "v4", "v5"} and all(
        a.result == "error" and a.error for a in refused
    )
    # the secret in the registered env never reaches the audit stream or a reply
    reg = await audits.wait_for(lambda a: a.action == "apps.register" and a.target == "limited")
    assert reg.params["spec"]["env"]["API_TOKEN"] == "***"
    listing = await ctl(nc, HOST, "apps.list", {"actor": "alice"}, AppListReply)
    assert "tok-secret-123" not in msgspec.json.encode(listing).decode()
    assert not any("tok-secret-123" in json.dumps(msgspec.to_builtins(a)) for a in audits.items)


async def test_malformed_request_is_400_and_dead_lettered(cmd, nc):
    js = nc.jetstream()
    psub = await js.pull_subscribe(subjects.deadletter("commander", HOST), durable=None)  # the host's own
    msg = await nc.request(subjects.ctl(HOST, "apps.start"), b'{"actor": "eve", "name": 42}', timeout=10)
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert "$.name" in msg.headers["Nats-Service-Error"]
    msg = await nc.request(subjects.ctl(HOST, "apps.start"), b'{"name": "x"}', timeout=10)
    assert msg.headers["Nats-Service-Error-Code"] == "400" and "actor" in msg.headers["Nats-Service-Error"]
    got = await psub.fetch(2, timeout=10)
    assert any(m.data == b'{"actor": "eve", "name": 42}' for m in got)
    await psub.unsubscribe()


async def test_micro_discovery(cmd, nc):
    inbox = nc.new_inbox()
    got: list[dict] = []

    async def cb(msg):
        got.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=cb)
    await nc.publish("$SRV.INFO.commander", b"", reply=inbox)
    deadline = time.monotonic() + 5
    while not any(i["metadata"].get("host") == HOST for i in got) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    info = next(i for i in got if i["metadata"].get("host") == HOST)
    assert info["name"] == "commander"
    endpoints = {e["subject"] for e in info["endpoints"]}
    assert {subjects.ctl(HOST, v) for v in ("apps.restart", "jobs.run", "procs.scan", "apps.logs")} <= endpoints
    stats = json.loads((await nc.request("$SRV.STATS.commander." + info["id"], b"", timeout=5)).data)
    by = {e["name"]: e for e in stats["endpoints"]}
    assert by["apps-list"]["num_requests"] > 0
    # the refusals of the validation test are counted as errors, with the last one's reason
    assert by["apps-register"]["num_errors"] >= 5 and by["apps-register"]["last_error"].startswith("400:")
    assert by["apps-stop"]["processing_time"] > 0


async def test_children_are_readopted_after_commander_restart(nats_stack, nc, workdir, appdir):
    state = workdir / "commander-state-b"
    env = service_env(**nats_stack.env(host="host-b"))
    cp = CommanderProcess(env, state, workdir / "commander-b1.log").start()
    pids: list[int] = []
    try:
        await cp.wait_ready(nc, "host-b")
        await register_app(
            nc,
            "host-b",
            {
                "name": "survivor",
                "run": {"runtime": "python", "script": str(appdir / "app.py"), "interpreter": APP_PYTHON},
                "restart": "always",
            },
            start=True,
        )
        pid = (await wait_state(nc, "host-b", "survivor", {"running"}, 10)).pid
        pids.append(pid)
        assert cp.stop() == 0
        assert pid_alive(pid)  # the child outlives its supervisor
        cp = CommanderProcess(env, state, workdir / "commander-b2.log").start()
        await cp.wait_ready(nc, "host-b")
        info = await app_status(nc, "host-b", "survivor")
        assert info.state == "running" and info.pid == pid and "re-adopted" in info.detail
        # and it is supervised again: a kill -9 is noticed and restarted
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            info = await app_status(nc, "host-b", "survivor")
            if info.pid and info.pid != pid and info.state in ("starting", "running"):
                break
            await asyncio.sleep(0.1)
        assert info.pid != pid and pid_alive(info.pid)
        pids.append(info.pid)
        await app_op(nc, "host-b", "apps.stop", "survivor")
        assert wait_pid_gone(info.pid, 10)
    finally:
        cp.stop()
        kill_tree_pids(pids)


async def test_jobs_run_timeout_stop_logs_cleanup(cmd, nc, appdir):
    r = await ctl(
        nc,
        HOST,
        "jobs.run",
        {
            "actor": "carol",
            "role": "admin",  # inline code: an admin's (tests/test_trust_policy.py)
            "argv": [APP_PYTHON, "-c", "print('hello from job'); import sys; sys.exit(4)"],
            "timeout_s": 30,
        },
        JobReply,
    )
    job_id = r.job.id
    assert re.fullmatch(r"job_\d{8}_\d{6}_[0-9a-f]{6}", job_id)
    deadline = time.monotonic() + 15
    while True:
        j = (await ctl(nc, HOST, "jobs.get", {"actor": "carol", "id": job_id}, JobReply)).job
        if j.state != "running" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert j.state == "failed" and j.exit_code == 4 and j.duration_s is not None and j.actor == "carol"
    logs = await ctl(nc, HOST, "jobs.logs", {"actor": "carol", "id": job_id}, JobLogsReply)
    assert logs.lines == ["hello from job"]

    slow = (
        await ctl(nc, HOST, "jobs.run", {"actor": "carol", "argv": ["sleep", "30"], "timeout_s": 0.5}, JobReply)
    ).job
    long = (await ctl(nc, HOST, "jobs.run", {"actor": "carol", "argv": ["sleep", "30"], "timeout_s": 60}, JobReply)).job
    stopped = (await ctl(nc, HOST, "jobs.stop", {"actor": "carol", "id": long.id}, JobReply)).job
    assert stopped.state == "stopped" and not pid_alive(long.pid)
    deadline = time.monotonic() + 10
    while True:
        s = (await ctl(nc, HOST, "jobs.get", {"actor": "carol", "id": slow.id}, JobReply)).job
        if s.state != "running" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert s.state == "timeout" and not pid_alive(slow.pid)
    again = (await ctl(nc, HOST, "jobs.restart", {"actor": "carol", "role": "admin", "id": job_id}, JobReply)).job
    assert again.id != job_id and again.argv == j.argv

    listing = await ctl(nc, HOST, "jobs.list", {"actor": "carol"}, JobListReply)
    assert {job_id, slow.id, long.id, again.id} <= {x.id for x in listing.jobs}
    with pytest.raises(CtlFailed) as ei:
        await ctl(nc, HOST, "jobs.run", {"actor": "carol", "argv": ["reboot"]})
    assert ei.value.code == 400
    with pytest.raises(CtlFailed) as ei:
        await ctl(nc, HOST, "jobs.get", {"actor": "carol", "id": "job_20000101_000000_abcdef"})
    assert ei.value.code == 404
    await asyncio.sleep(0.5)
    removed = (await ctl(nc, HOST, "jobs.cleanup", {"actor": "carol", "older_than_s": 0}))["removed"]
    assert removed >= 3
    with pytest.raises(CtlFailed):
        await ctl(nc, HOST, "jobs.logs", {"actor": "carol", "id": job_id})


async def test_scan_finds_unmanaged_python_with_its_port(cmd, nc, appdir):
    _, started = cmd
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=appdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await register(
            nc,
            started,
            "managed-one",
            {"runtime": "python", "script": str(appdir / "app.py"), "interpreter": APP_PYTHON},
        )
        managed = await app_op(nc, HOST, "apps.start", "managed-one")
        deadline = time.monotonic() + 10
        while True:
            r = await ctl(nc, HOST, "procs.scan", {"actor": "alice"}, ScanReply)
            mine = [p for p in r.procs if p.pid == server.pid]
            if (mine and port in mine[0].ports) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert mine and mine[0].runtime == "python" and port in mine[0].ports and mine[0].cwd == str(appdir)
        assert managed.pid not in {p.pid for p in r.procs}
        await app_op(nc, HOST, "apps.stop", "managed-one")

        # adopt it: the commander supervises the process it found instead of starting another
        argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        with pytest.raises(CtlFailed) as ei:
            await ctl(
                nc,
                HOST,
                "apps.register",
                {
                    "actor": "alice",
                    "role": "admin",  # adopting a process of another user (root) is an admin's
                    "spec": {"name": "adopted", "run": {"runtime": "binary", "argv": [APP_PYTHON, "-V"]}},
                    "adopt_pid": server.pid,
                },
            )
        assert ei.value.code == 400 and "not the app's command" in ei.value.message
        r = await register(
            nc, started, "adopted", {"runtime": "binary", "argv": argv}, cwd=str(appdir), adopt_pid=server.pid
        )
        assert r.state == "running" and r.pid == server.pid
        scan_after = await ctl(nc, HOST, "procs.scan", {"actor": "alice"}, ScanReply)
        assert server.pid not in {p.pid for p in scan_after.procs}  # managed now
        stopped = await app_op(nc, HOST, "apps.stop", "adopted")
        assert stopped.state == "stopped"
        assert server.wait(10) is not None
    finally:
        server.kill()
        server.wait()


async def test_user_switch_and_stop_escalates_to_sigkill(cmd, nc, appdir):
    import psutil

    _, started = cmd
    stubborn = appdir / "stubborn.py"
    stubborn.write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ignoring TERM', flush=True)\nwhile True:\n    time.sleep(0.1)\n"
    )
    stubborn.chmod(0o644)
    # the interpreter must be one `nobody` may execute (not a virtualenv under /root)
    await register(
        nc,
        started,
        "as-nobody",
        {"runtime": "python", "script": str(stubborn), "interpreter": "/usr/bin/python3"},
        user="nobody",
        stop_timeout_s=1.0,
    )
    info = await app_op(nc, HOST, "apps.start", "as-nobody")
    started_at = time.monotonic()
    await wait_state(nc, HOST, "as-nobody", {"running"})
    assert psutil.Process(info.pid).username() == "nobody"
    await asyncio.sleep(max(0.0, started_at + 1.05 - time.monotonic()))  # the stop is timed: past the rate limit first
    t0 = time.monotonic()
    stopped = await ctl(nc, HOST, "apps.stop", {"actor": "alice", "name": "as-nobody"}, AppReply)
    took = time.monotonic() - t0
    assert stopped.app.state == "stopped" and "SIGKILL" in stopped.app.detail
    assert took >= 0.9 and wait_pid_gone(info.pid, 5)


async def test_job_concurrency_limit_is_429(cmd, nc):
    running = []
    try:
        for _ in range(4):  # the default per-host limit
            running.append(
                (
                    await ctl(
                        nc, HOST, "jobs.run", {"actor": "dave", "argv": ["sleep", "20"], "timeout_s": 30}, JobReply
                    )
                ).job
            )
        with pytest.raises(CtlFailed) as ei:
            await ctl(nc, HOST, "jobs.run", {"actor": "dave", "argv": ["sleep", "20"]})
        assert ei.value.code == 429 and "4 jobs" in ei.value.message
    finally:
        for j in running:
            await ctl(nc, HOST, "jobs.stop", {"actor": "dave", "id": j.id})
    assert not any(pid_alive(j.pid) for j in running)


async def test_after_a_reboot_only_start_on_boot_apps_start(nats_stack, nc, workdir, appdir):
    from libs.schemas.control import AppSpec, PythonRun
    from services.commander.store import AppRecord, StateFile

    state = workdir / "commander-state-reboot"
    state.mkdir()
    run = PythonRun(script=str(appdir / "app.py"), interpreter=APP_PYTHON)
    apps = {
        "boots": AppRecord(
            spec=AppSpec(name="boots", run=run, start_on_boot=True), desired="running", pid=999999, create_time=1.0
        ),
        "stays": AppRecord(spec=AppSpec(name="stays", run=run, start_on_boot=False), desired="running"),
        "off": AppRecord(spec=AppSpec(name="off", run=run, start_on_boot=True), desired="stopped"),
    }
    # written before "the reboot": a boot time that is not this machine's
    (state / "apps.json").write_bytes(msgspec.json.encode(StateFile(apps=apps, boot_time=1.0)))
    cp = CommanderProcess(service_env(**nats_stack.env(host="host-c")), state, workdir / "commander-reboot.log").start()
    try:
        await cp.wait_ready(nc, "host-c")
        listing = await ctl(nc, "host-c", "apps.list", {"actor": "alice"}, AppListReply)
        by = {a.spec.name: a for a in listing.apps}
        assert by["boots"].state in ("starting", "running") and pid_alive(by["boots"].pid) and by["boots"].pid != 999999
        assert by["stays"].state == "stopped" and "start_on_boot is off" in by["stays"].detail
        assert by["off"].state == "stopped" and by["off"].pid is None
    finally:
        cp.stop()
        cp.kill_children()


async def test_audit_record_outlives_a_missing_stream(fresh_nats, admin, workdir):
    """The AUDIT stream unavailable when a request is audited (as during a leader election):
    the commander publishes again with the same id, and the record is stored exactly once."""
    from libs.runtime.jetstream import provision

    log = workdir / "commander-audit-retry.log"
    cp = CommanderProcess(service_env(**fresh_nats.env(host=HOST)), workdir / "commander-audit-retry", log).start()
    try:
        await cp.wait_ready(admin, HOST)
        js = admin.jetstream()
        await js.delete_stream("AUDIT")
        with pytest.raises(CtlFailed):  # a change (refused: no such app) is audited, a read would not be
            await ctl(admin, HOST, "apps.stop", {"actor": "auditee", "name": "ghost"})
        deadline = time.monotonic() + 15
        while "audit record not stored yet" not in log.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert "audit record not stored yet" in log.read_text()
        await provision(admin)
        sub = await js.subscribe(subjects.audit(HOST), ordered_consumer=True)
        try:
            first = msgspec.json.decode((await sub.next_msg(timeout=15)).data, type=AuditRecord)
            assert (first.actor, first.action, first.result) == ("auditee", "apps.stop", "error")
            await asyncio.sleep(3)  # later tries (there must be none) would land here
            assert (await js.stream_info("AUDIT")).state.messages == 1
        finally:
            await sub.unsubscribe()
    finally:
        cp.stop()
    assert "audit record not stored:" not in log.read_text()
