"""libs.runtime against a real nats-server: settings, reconnect, drain on SIGTERM, per-host auth."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import nats
import pytest

from libs.runtime import NatsSettings, SettingsError, connect, load_settings
from libs.runtime.logs import JsonFormatter, register_secret
from tests.conftest import ROOT, service_env
from tests.support.natsprobe import delivered


def test_bad_setting_names_the_variable():
    from tests.support.echo_service import EchoConfig

    with pytest.raises(SettingsError) as ei:
        load_settings(
            EchoConfig,
            "FLEETWATCH_ECHO_",
            {"FLEETWATCH_NATS_URL": "nats://127.0.0.1:4222", "FLEETWATCH_ECHO_DELAY": "soon"},
        )
    assert "FLEETWATCH_ECHO_DELAY" in str(ei.value) and "float" in str(ei.value)


def test_nats_url_must_be_set_in_the_environment():
    """The in-code default is no default for a service: unset or empty, the loader names it."""
    from tests.support.echo_service import EchoConfig

    for env in ({}, {"FLEETWATCH_NATS_URL": " "}):
        with pytest.raises(SettingsError, match="FLEETWATCH_NATS_URL: .*required but not set"):
            load_settings(EchoConfig, "FLEETWATCH_ECHO_", env)


def test_bad_setting_stops_startup_with_the_variable_name():
    env = service_env(FLEETWATCH_NATS_CONNECT_TIMEOUT="not-a-number")
    r = subprocess.run(
        [sys.executable, "-m", "tests.support.echo_service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "FLEETWATCH_NATS_CONNECT_TIMEOUT" in r.stderr and "float" in r.stderr


def test_secret_setting_value_never_echoed():
    env = service_env(FLEETWATCH_NATS_PASSWORD="hunter2-secret", FLEETWATCH_ECHO_WORKERS="many")
    r = subprocess.run(
        [sys.executable, "-m", "tests.support.echo_service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "FLEETWATCH_ECHO_WORKERS" in r.stderr
    assert "hunter2-secret" not in r.stderr + r.stdout


def test_log_lines_mask_secrets():
    import logging

    register_secret("s3cr3t-value-xyz")
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "connecting with s3cr3t-value-xyz", (), None)
    rec.password = "plain"
    rec.params = {"api_token": "abc", "name": "ok"}
    out = json.loads(JsonFormatter("svc").format(rec))
    assert "s3cr3t-value-xyz" not in json.dumps(out)
    assert out["password"] == "***" and out["params"] == {"api_token": "***", "name": "ok"}


async def test_client_reconnects_after_server_restart_and_subscriptions_work(fresh_nats):
    nc = await connect(fresh_nats.settings("admin"), "reconnect-test", retry_forever=False)
    got: asyncio.Queue = asyncio.Queue()

    async def cb(msg):
        await got.put(msg.data)

    await nc.subscribe("test.reconnect", cb=cb)
    await nc.publish("test.reconnect", b"before")
    assert await asyncio.wait_for(got.get(), 5) == b"before"

    fresh_nats.kill()
    await asyncio.sleep(1.0)
    assert not nc.is_connected
    fresh_nats.server.start()  # same config, same port

    for _ in range(100):
        if nc.is_connected:
            break
        await asyncio.sleep(0.1)
    assert nc.is_connected
    pub = await connect(fresh_nats.settings("admin"), "publisher", retry_forever=False)
    await pub.publish("test.reconnect", b"after")
    await pub.flush()
    assert await asyncio.wait_for(got.get(), 5) == b"after"
    await pub.close()
    await nc.close()


async def test_sigterm_drains_messages_already_received(nats_stack):
    env = service_env(**nats_stack.env("admin"), FLEETWATCH_ECHO_SUBJECT="test.drain", FLEETWATCH_ECHO_DELAY="1.0")
    nc = await connect(nats_stack.settings("admin"), "drain-test", retry_forever=False)
    done = await nc.subscribe("test.drain.done")
    ready = await nc.subscribe("test.drain.ready")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.echo_service"], env=env, cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        await ready.next_msg(timeout=20)
        await nc.publish("test.drain", b"m1")
        await nc.publish("test.drain", b"m2")
        await nc.flush()
        await asyncio.sleep(0.2)  # the service has them; it is still sleeping on the first
        proc.send_signal(signal.SIGTERM)
        got = {(await done.next_msg(timeout=10)).data, (await done.next_msg(timeout=10)).data}
        assert got == {b"m1", b"m2"}
        assert proc.wait(20) == 0
        logs = proc.stderr.read().decode()
        events = [json.loads(line).get("event") for line in logs.splitlines() if line.startswith("{")]
        assert events.index("ready") < events.index("stopping") < events.index("stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
        await nc.close()


async def test_host_credentials_cover_only_that_host(nats_stack):
    errors: list[str] = []

    async def error_cb(e):
        errors.append(str(e))

    admin = await connect(nats_stack.settings("admin"), "admin-watch", retry_forever=False)
    seen_b = await admin.subscribe("fleet.metrics.host-b")
    seen_a = await admin.subscribe("fleet.metrics.host-a")
    await admin.flush()

    a = nats_stack.agent_settings("host-a")
    agent = await nats.connect(
        servers=[a.url],
        user=a.user,
        password=a.password,
        inbox_prefix=a.inbox_prefix,
        error_cb=error_cb,
        allow_reconnect=False,
    )
    await agent.publish("fleet.metrics.host-a", b"mine")
    await agent.publish("fleet.metrics.host-b", b"forged")
    await agent.flush()
    assert (await seen_a.next_msg(timeout=5)).data == b"mine"
    with pytest.raises(nats.errors.TimeoutError):
        await seen_b.next_msg(timeout=1)
    assert any("permissions violation" in e.lower() and "fleet.metrics.host-b" in e for e in errors), errors

    errors.clear()
    await agent.subscribe("fleet.ctl.host-b.>")
    await agent.flush()
    await asyncio.sleep(0.3)
    assert any("permissions violation" in e.lower() and "fleet.ctl.host-b" in e for e in errors), errors
    # Its own control subjects are allowed.
    errors.clear()
    own = await agent.subscribe("fleet.ctl.host-a.>")
    await agent.flush()
    assert await delivered(admin, own, "fleet.ctl.host-a.apps.list", b"{}")
    assert not errors
    await agent.close()
    await admin.close()


async def test_wrong_password_is_refused(nats_stack):
    s = nats_stack.settings("admin")
    with pytest.raises(nats.errors.AuthorizationError):
        await connect(NatsSettings(url=s.url, user="admin", password="wrong"), "bad", retry_forever=False)


async def test_provisioning_is_idempotent(nc):
    from libs.runtime.jetstream import provision
    from libs.schemas.streams import STREAMS

    await provision(nc)
    await provision(nc)
    js = nc.jetstream()
    for spec in STREAMS:
        info = await js.stream_info(spec.name)
        assert sorted(info.config.subjects) == sorted(spec.subjects)
    audit = await js.stream_info("AUDIT")
    assert audit.config.deny_delete and audit.config.deny_purge
