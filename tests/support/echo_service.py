"""A minimal service built on libs.runtime, for testing the runtime itself (shutdown, settings).

Each message on `<subject>` is handled slowly, then answered on `<subject>.done`.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec

from libs.runtime import LogSettings, NatsSettings, open_nats, run


class EchoConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    log: LogSettings = LogSettings()
    subject: str = "test.echo"
    delay: float = 0.5
    workers: int = 1


class EchoService:
    def __init__(self, config: EchoConfig, nc) -> None:
        self.config = config
        self.nc = nc

    async def start(self) -> None:
        async def handle(msg) -> None:
            await asyncio.sleep(self.config.delay)
            await self.nc.publish(self.config.subject + ".done", msg.data)

        await self.nc.subscribe(self.config.subject, cb=handle)
        await self.nc.flush()
        await self.nc.publish(self.config.subject + ".ready", b"")

    async def stop(self) -> None:
        pass


async def build(config: EchoConfig, stack: contextlib.AsyncExitStack) -> EchoService:
    nc = await open_nats(stack, config.nats, "echo")
    return EchoService(config, nc)


if __name__ == "__main__":
    run("echo", EchoConfig, build)
