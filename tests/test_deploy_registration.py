"""Agent registration without touching NATS: an admin adds a host through the gateway and gets
credentials once; they let that host's agents in with that host's permissions only (nats-server
auth callout answered by services.authcallout); revoking cuts the agents off within seconds.
The server process is the same from start to end."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import httpx
import pytest

from libs.embedded import natsconfig
from libs.runtime import NatsSettings, connect
from libs.runtime.jetstream import provision
from libs.schemas import subjects
from tests.support.gateway import running_gateway
from tests.support.registration import TTL_S, CalloutStack, agent_settings, try_connect

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def callout_stack(workdir):
    st = CalloutStack(workdir / f"callout-{uuid.uuid4().hex[:8]}")
    st.server.start()
    yield st
    st.stop()


async def test_register_connect_scoped_then_revoke_cuts_off(callout_stack, db_dsn, workdir):
    st = callout_stack
    admin = await connect(
        NatsSettings(url=st.url, user="admin", password=st.creds["admin"]), "reg-admin", retry_forever=False
    )
    await provision(admin)
    st.start_callout()
    server_pid = st.server.proc.pid
    gw_dir = workdir / f"gw-reg-{uuid.uuid4().hex[:6]}"
    try:
        # Static identities are untouched by the callout.
        static = await connect(
            NatsSettings(
                url=st.url, user="agent-static-1", password=st.creds["agent-static-1"], inbox_prefix="_INBOX_static-1"
            ),
            "static",
            retry_forever=False,
        )
        await static.close()

        with running_gateway(st.env("gateway"), db_dsn, gw_dir) as gw:
            api = gw.url + "/api/v1/hosts"
            # Unknown before registration.
            nc0, errs = await try_connect(
                agent_settings(st.url, {"user": "agent-web-7", "password": "guess", "inbox_prefix": "_INBOX_web-7"})
            )
            assert nc0 is None and any("authorization" in str(e).lower() for e in errs), errs

            assert (
                httpx.post(api, json={"host": "web-7"}, headers=gw.headers("operator"), timeout=30).status_code == 403
            )
            assert (
                httpx.post(api, json={"host": "not a host!"}, headers=gw.headers("admin"), timeout=30).status_code
                == 400
            )
            r = httpx.post(
                api, json={"host": "web-7", "labels": {"role": "web"}}, headers=gw.headers("admin"), timeout=30
            )
            assert r.status_code == 201, r.text
            creds = r.json()
            assert creds["user"] == "agent-web-7" and creds["inbox_prefix"] == subjects.inbox_prefix("web-7")
            assert f"FLEETWATCH_NATS_PASSWORD={creds['password']}" in creds["env"]
            # Once: a second registration is refused and never shows the password again.
            again = httpx.post(api, json={"host": "web-7"}, headers=gw.headers("admin"), timeout=30)
            assert again.status_code == 409 and creds["password"] not in again.text
            assert creds["password"] not in gw.log()

            agent, errs = await try_connect(agent_settings(st.url, creds))
            assert agent is not None, errs
            js = agent.jetstream()
            ack = await js.publish(subjects.metrics("web-7"), b"{}", timeout=5)
            assert ack.stream == "METRICS"
            # Its own subjects only: another host's frames and commands are refused by the server.
            violations: list[str] = []
            agent._error_cb = lambda e: violations.append(str(e)) or asyncio.sleep(0)  # noqa: SLF001 - record permission errors
            await agent.publish(subjects.metrics("web-8"), b"{}")
            await agent.subscribe(subjects.ctl("web-8", ">"))
            await agent.flush()
            for _ in range(50):
                if len(violations) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert any("publish" in v.lower() and "fleet.metrics.web-8" in v for v in violations), violations
            assert any("subscription" in v.lower() and "fleet.ctl.web-8" in v for v in violations), violations
            # A wrong password for a registered host is refused.
            bad, _ = await try_connect(agent_settings(st.url, {**creds, "password": "x" + creds["password"]}))
            assert bad is None

            # Survives its authorization's TTL: it reconnects and is admitted again.
            await asyncio.sleep(TTL_S * 2 + 1)
            for _ in range(50):
                if agent.is_connected:
                    break
                await asyncio.sleep(0.2)
            assert (await js.publish(subjects.metrics("web-7"), b"{}", timeout=5)).stream == "METRICS"

            # Revoke: cut off within seconds, and no new connection.
            assert (
                httpx.delete(f"{api}/web-7/registration", headers=gw.headers("operator"), timeout=30).status_code == 403
            )
            t0 = time.monotonic()
            assert httpx.delete(f"{api}/web-7/registration", headers=gw.headers("admin"), timeout=30).status_code == 204
            cut_after = None
            while time.monotonic() - t0 < TTL_S + 10:
                try:
                    await js.publish(subjects.metrics("web-7"), b"{}", timeout=0.5)
                except Exception:
                    if not agent.is_connected:
                        cut_after = time.monotonic() - t0
                        break
                await asyncio.sleep(0.2)
            assert cut_after is not None and cut_after < TTL_S + 10, "revoked agent still connected"
            await asyncio.sleep(1)
            assert not agent.is_connected
            again_nc, errs = await try_connect(agent_settings(st.url, creds))
            assert again_nc is None
            assert httpx.delete(f"{api}/web-7/registration", headers=gw.headers("admin"), timeout=30).status_code == 404
            print(f"revoked agent cut off after {cut_after:.1f} s (callout TTL {TTL_S} s)")
            with contextlib.suppress(Exception):  # it is mid-reconnect, being refused
                await agent.close()
        # NATS was never restarted nor reconfigured.
        assert st.server.proc.pid == server_pid and st.server.running()
        log = (st.root / "authcallout.log").read_text()
        assert "agent admitted" in log and "login refused" in log and creds["password"] not in log
    finally:
        await admin.close()


def test_callout_issuer_seed_is_masked_in_logs():
    from libs.runtime.logs import redact, register_secrets_from
    from services.authcallout.config import AuthCalloutConfig

    seed = natsconfig.new_account_seed()
    register_secrets_from(AuthCalloutConfig(issuer_seed=seed))
    assert seed not in redact(f"bad issuer {seed}")
