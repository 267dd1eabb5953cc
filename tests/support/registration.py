"""A nats-server with agent registration on plus the authcallout service, and a bounded probe
connect: shared by the registration and service-stats tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import nats

from libs.embedded import NatsServer, free_port, natsconfig
from libs.runtime import NatsSettings, connect
from tests.conftest import ROOT, service_env

TTL_S = 2


class CalloutStack:
    """nats-server with registration on, plus the authcallout service as a subprocess."""

    def __init__(self, root) -> None:
        self.root = root
        self.port = free_port()
        inv = natsconfig.Inventory(
            server=natsconfig.ServerSection(registration=True), hosts=[natsconfig.InventoryHost(id="static-1")]
        )
        self.creds = natsconfig.write_config(
            inv, root / "nats", store_dir=str(root / "js"), listen=f"127.0.0.1:{self.port}"
        )
        self.server = NatsServer(root / "nats" / "nats.conf", self.port, log_file=root / "nats.log")
        self.callout: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def env(self, user: str) -> dict[str, str]:
        return {
            "FLEETWATCH_NATS_URL": self.url,
            "FLEETWATCH_NATS_USER": user,
            "FLEETWATCH_NATS_PASSWORD": self.creds[user],
            "FLEETWATCH_NATS_RECONNECT_WAIT": "0.2",
        }

    def start_callout(self) -> None:
        env_file = (self.root / "nats" / "env" / f"{natsconfig.CALLOUT_USER}.env").read_text()
        env = dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line)
        env.update(FLEETWATCH_NATS_URL=self.url, FLEETWATCH_AUTHCALLOUT_TTL_S=str(TTL_S))
        log = open(self.root / "authcallout.log", "wb")
        self.callout = subprocess.Popen(
            [sys.executable, "-m", "services.authcallout"],
            env=service_env(**env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.callout and self.callout.poll() is None:
            self.callout.terminate()
            try:
                self.callout.wait(15)
            except subprocess.TimeoutExpired:
                self.callout.kill()
        self.server.stop()


def agent_settings(url: str, creds: dict) -> NatsSettings:
    return NatsSettings(
        url=url,
        user=creds["user"],
        password=creds["password"],
        inbox_prefix=creds["inbox_prefix"],
        reconnect_wait=0.2,
        connect_timeout=3,
    )


async def try_connect(settings: NatsSettings, seconds: float = 6):
    errors: list[BaseException] = []

    async def error_cb(e):
        errors.append(e)

    try:
        return await asyncio.wait_for(
            connect(settings, "probe", retry_forever=False, error_cb=error_cb), seconds
        ), errors
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        return None, [*errors, exc]
