"""The run-as policy (docs/security.md, "Operator jobs and apps: the run-as policy"), against a
real nats-server, gateway and commander: an operator is neither root nor an admin. Their jobs run
as an unprivileged user that cannot read the gateway's key nor any credential file; shells,
interpreters fed inline code, `env` wrappers, a copied shell, a PATH hijack and `user: root` are
refused with a reason; admins still run anything, as anyone; only admins edit the policy.

The commander runs as root, as on a host, so that it can switch to `nobody`: the module needs root.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import time

import httpx
import pytest

from fleetwatch.devstack import DevState
from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import AuditRecord, subjects
from libs.schemas.control import AppReply
from tests.conftest import service_env
from tests.support.commander import Collector, CommanderProcess, CtlFailed, ctl, remove_apps, signed_webhook
from tests.support.gateway import create_database, drop_database, running_gateway

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.geteuid() != 0, reason="the commander switches jobs to `nobody`: that needs root"),
]

HOST = "local"
SECRET = "trust-policy-webhook-secret"
NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture(scope="module")
async def stack(nats_stack, pg_cluster, workdir):
    admin = await connect(nats_stack.settings("admin"), "trust-policy", retry_forever=False)
    await provision(admin)
    dsn = await create_database(pg_cluster.dsn, "trustpol")
    d = workdir / "trust-policy"
    d.mkdir(exist_ok=True)
    # The gateway's key in the file the dev stack keeps it in (.fleetwatch/gateway-secret).
    dev = DevState(d / "devstate")
    key = dev.secret("gateway-secret")
    cp = CommanderProcess(service_env(**nats_stack.env(host=HOST)), d / "state", d / "commander.log").start()
    await cp.wait_ready(admin, HOST)
    with running_gateway(nats_stack, dsn, d / "gw", webhook_secret=SECRET, secret_key=key) as gw:
        async with gw.async_client("admin") as a:
            await a.delete("/api/v1/policy")  # an earlier module's fleet default: not this test's
            await a.delete(f"/api/v1/hosts/{HOST}/policy")
        yield gw, admin, d, dev
        async with gw.async_client("admin") as a:  # leave no policy for the modules after this one
            await a.delete(f"/api/v1/hosts/{HOST}/policy")
    cp.stop()
    cp.kill_children()
    await admin.close()
    await drop_database(pg_cluster.dsn, dsn)


JOBS = f"/api/v1/hosts/{HOST}/jobs"


async def finished(c: httpx.AsyncClient, job_id: str) -> tuple[dict, list[str]]:
    deadline = time.monotonic() + 20
    while True:
        job = (await c.get(f"{JOBS}/{job_id}")).json()["job"]
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return job, (await c.get(f"{JOBS}/{job_id}/logs")).json()["lines"]


async def ran(c: httpx.AsyncClient, argv: list[str], **body) -> tuple[dict, list[str]]:
    r = await c.post(JOBS, json={"argv": argv, "timeout_s": 30, **body})
    assert r.status_code == 201, r.text
    return await finished(c, r.json()["job"]["id"])


def refusal_cases(d) -> dict[str, tuple[dict, str]]:
    """label -> (job request, a word the refusal must give as its reason)."""
    victim = d / "victim"
    victim.write_text("keep me\n")
    marker = d / "ran"
    copied = d / "tools" / "report"  # /bin/bash under a harmless name
    copied.parent.mkdir(exist_ok=True)
    shutil.copy2("/bin/bash", copied)
    evil = d / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "ls").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (evil / "ls").chmod(0o755)
    return {
        "env wrapper": ({"argv": ["env", "rm", "-f", str(victim)]}, "/usr/bin/env"),
        "inline python": ({"argv": ["/usr/bin/python3", "-c", f"import os; os.system('touch {marker}')"]}, "python"),
        "copied shell": ({"argv": [str(copied), "-c", f"touch {marker}"]}, str(copied)),
        "PATH hijack": ({"argv": ["ls"], "env": {"PATH": f"{evil}:/usr/bin:/bin"}}, "PATH"),
        "user root": ({"argv": ["id", "-u"], "user": "root"}, "root"),
    }


async def test_operator_cannot_escape_the_allowlist(stack):
    gw, _, d, _ = stack
    cases = refusal_cases(d)
    async with gw.async_client("operator") as op:
        for label, (body, reason) in cases.items():
            r = await op.post(JOBS, json={**body, "timeout_s": 30})
            assert r.status_code == 403, (label, r.status_code, r.text)
            assert reason in r.json()["detail"], (label, r.json()["detail"])
        # the signed webhook acts as an operator, whatever role or policy its params claim
        forged = {"role": "admin", "policy": {"executables": ["/usr/bin/env"], "run_as": "daemon"}}
        cmd = {"host": HOST, "verb": "jobs.run", "params": {**cases["env wrapper"][0], **forged}, "actor": "ci"}
        signed = signed_webhook(SECRET, cmd)
        r = await op.post("/api/v1/webhook/command", content=signed.content, headers=signed.headers)
        assert r.status_code == 403 and "/usr/bin/env" in r.json()["detail"], r.text
    await asyncio.sleep(0.5)
    assert (d / "victim").read_text() == "keep me\n"
    assert not (d / "ran").exists(), "a refused command ran"


async def test_allowlisted_job_runs_unprivileged_and_reads_no_credential(stack, nats_stack, pg_cluster):
    gw, _, d, dev = stack
    async with gw.async_client("operator") as op:
        job, lines = await ran(op, ["id", "-u"])
        assert job["state"] == "succeeded" and job["user"] == "nobody", job
        assert lines == [str(NOBODY)]
        # The gateway's key (which signs admin sessions) and every credential the host keeps.
        creds = [
            dev.root / "gateway-secret",
            nats_stack.root / "nats" / "credentials.json",
            nats_stack.root / "nats" / "nats.conf",
            nats_stack.root / "nats" / "env" / "gateway.env",
            pg_cluster.password_file,
        ]
        for path in creds:
            assert path.exists(), path
            job, lines = await ran(op, ["cat", str(path)])
            # (an operator's view of job output is masked: "Permission" may read "***")
            assert job["exit_code"] == 1 and any(x.endswith(" denied") for x in lines), (path, job, lines)
            assert path.read_text().strip() not in "\n".join(lines)
        assert (dev.root / "gateway-secret").stat().st_mode & 0o777 == 0o600
        assert (nats_stack.root / "nats").stat().st_mode & 0o777 == 0o700
    async with gw.async_client("admin") as a:  # an admin's job that names no user: not root either
        job, lines = await ran(a, ["cat", str(dev.root / "gateway-secret")])
        assert job["user"] == "nobody" and any("Permission denied" in x for x in lines), (job, lines)


async def test_admin_runs_anything_as_anyone_audited(stack):
    gw, admin, _, dev = stack
    async with Collector(admin, subjects.audit(HOST), AuditRecord) as audits, gw.async_client("admin") as a:
        job, lines = await ran(a, ["id", "-u"], user="root")
        assert job["user"] == "root" and lines == ["0"]
        job, lines = await ran(a, ["/usr/bin/python3", "-c", "import os; print('inline', os.getuid())"])
        assert job["state"] == "succeeded" and lines == [f"inline {NOBODY}"]
        job, lines = await ran(a, ["cat", str(dev.root / "gateway-secret")], user="root")
        assert lines == [dev.secret("gateway-secret")]
        rec = await audits.wait_for(lambda x: x.action == "jobs.run" and x.params.get("user") == "root")
        assert rec.actor == "admin" and rec.params["role"] == "admin" and "policy" not in rec.params


async def test_an_operator_reruns_nothing_as_root(stack):
    gw, _, _, _ = stack
    async with gw.async_client("admin") as a, gw.async_client("operator") as op:
        r = await a.post(JOBS, json={"argv": ["id", "-u"], "user": "root", "timeout_s": 30})
        assert r.status_code == 201, r.text
        root_job = r.json()["job"]["id"]
        await finished(a, root_job)
        r = await op.post(f"{JOBS}/{root_job}/restart")
        assert r.status_code == 403 and "root" in r.json()["detail"], r.text
        own = (await op.post(JOBS, json={"argv": ["id", "-u"], "timeout_s": 30})).json()["job"]["id"]
        await finished(op, own)
        again = await op.post(f"{JOBS}/{own}/restart")
        assert again.status_code == 201, again.text
        _, lines = await finished(op, again.json()["job"]["id"])
        assert lines == [str(NOBODY)]


async def test_policy_is_the_admins_and_is_checked(stack):
    gw, _, d, _ = stack
    script = d / "report.py"
    script.write_text("import os, sys\nprint('report', os.getuid(), *sys.argv[1:])\n")
    script.chmod(0o644)
    path = f"/api/v1/hosts/{HOST}/policy"
    good = {
        "executables": ["/usr/bin/id"],
        "argv_prefixes": [["/usr/bin/python3", str(script)]],
        "operator_users": ["daemon"],
    }
    async with (
        gw.async_client("admin") as a,
        gw.async_client("operator") as op,
        gw.async_client("viewer") as viewer,
    ):
        for c in (op, viewer):
            assert (await c.get(path)).status_code == 403
            assert (await c.put(path, json=good)).status_code == 403
            assert (await c.put("/api/v1/policy", json=good)).status_code == 403
        bad = {
            "root": ({"run_as": "root"}, "root"),
            "relative path": ({"executables": ["bin/ls"]}, "absolute"),
            "bare interpreter": ({"executables": ["/usr/bin/python3"]}, "argv_prefixes"),
            "inline code prefix": ({"argv_prefixes": [["/usr/bin/perl", "-e"]]}, "'-e'"),
            "operator root": ({"operator_users": ["root"]}, "root"),
            "wrong type": ({"executables": "/usr/bin/id"}, ""),
        }
        for label, (body, reason) in bad.items():
            r = await a.put(path, json=body)
            assert r.status_code == 400 and reason in r.text, (label, r.status_code, r.text)
        assert (await a.get(path)).json()["source"] == "commander"

        r = await a.put(path, json=good)
        assert r.status_code == 200 and r.json()["updated_by"] == "admin", r.text
        assert (await a.get(path)).json()["source"] == "host"
        # the host's policy, as an operator meets it
        assert (await op.post(JOBS, json={"argv": ["uptime"]})).status_code == 403  # default list replaced
        _, lines = await ran(op, ["id", "-u"], user="daemon")
        assert lines == [str(pwd.getpwnam("daemon").pw_uid)]
        _, lines = await ran(op, ["/usr/bin/python3", str(script), "--since", "1h"])
        assert lines == [f"report {NOBODY} --since 1h"]
        r = await op.post(JOBS, json={"argv": ["/usr/bin/python3", "-c", "print(1)"]})
        assert r.status_code == 403

        # the fleet's default applies where a host has none of its own
        assert (await a.delete(path)).status_code == 204
        assert (await a.put("/api/v1/policy", json={"executables": ["/usr/bin/uptime"]})).status_code == 200
        assert (await a.get(path)).json()["source"] == "fleet"
        assert (await op.post(JOBS, json={"argv": ["id"]})).status_code == 403
        assert (await op.post(JOBS, json={"argv": ["uptime"]})).status_code == 201
        assert (await a.delete("/api/v1/policy")).status_code == 204
        assert (await a.get(path)).json()["source"] == "commander"


async def test_apps_get_the_same_rules(stack):
    gw, admin, _, _ = stack
    async with gw.async_client("admin") as a:
        spec = {"name": "pol-app", "run": {"runtime": "binary", "argv": ["sleep", "60"]}, "restart": "never"}
        r = await a.post(f"/api/v1/hosts/{HOST}/apps", json={"spec": spec, "start": True})
        assert r.status_code == 201, r.text
        app = r.json()["app"]
        assert app["spec"]["user"] == "nobody" and app["pid"]
        import psutil

        assert psutil.Process(app["pid"]).uids().real == NOBODY
    try:
        # what the gateway would never send for apps.register, the commander refuses anyway
        for spec, reason in (
            ({"name": "pol-py", "run": {"runtime": "binary", "argv": ["/usr/bin/python3", "-c", "1"]}}, "python"),
            ({"name": "pol-root", "run": {"runtime": "binary", "argv": ["sleep", "1"]}, "user": "root"}, "root"),
        ):
            with pytest.raises(CtlFailed) as ei:
                await ctl(admin, HOST, "apps.register", {"actor": "eve", "role": "operator", "spec": spec}, AppReply)
            assert ei.value.code == 403 and reason in ei.value.message, ei.value
    finally:
        await remove_apps(admin, HOST, ["pol-app"])


async def test_only_the_gateway_sends_control_requests(nats_stack):
    """The role in a control request is the gateway's word: no other central service may send one."""
    ingest = await connect(nats_stack.settings("ingest"), "trust-policy-ingest", retry_forever=False)
    try:
        with pytest.raises(Exception) as ei:
            await ingest.request(
                subjects.ctl(HOST, "jobs.run"), b'{"actor": "x", "role": "admin", "argv": ["id"]}', timeout=2
            )
        assert "timeout" in type(ei.value).__name__.lower() or "permission" in str(ei.value).lower(), ei.value
    finally:
        await ingest.close()
