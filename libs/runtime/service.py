"""How every service's __main__ runs: settings -> connections -> service -> wait for stop -> drain.

A service is an object with `start()` and `stop()`. `build(config, stack)` opens what the
service needs, registering each close on the AsyncExitStack; on SIGTERM/SIGINT the service is
stopped first, then the stack unwinds in reverse order (NATS drained, pools closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec
from nats.aio.client import Client as NATS

from . import natsconn
from .logs import register_secrets_from, setup_logging
from .settings import LogSettings, NatsSettings, SettingsError, load_settings
from .stats import ServiceStats, StatsService

C = TypeVar("C", bound=msgspec.Struct)  # a settings class, see load_settings


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Build = Callable[[Any, contextlib.AsyncExitStack], Awaitable[Service]]


async def open_nats(stack: contextlib.AsyncExitStack, settings: NatsSettings, name: str) -> NATS:
    """Connect and register a drain: pending messages of every subscription are handled before close."""
    nc = await natsconn.connect(settings, name)

    async def _drain() -> None:
        if nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.drain(), timeout=30)
        except Exception:
            await nc.close()

    stack.push_async_callback(_drain)
    return nc


async def open_stats(
    stack: contextlib.AsyncExitStack, nc: NATS, kind: str, stats: ServiceStats, *, host: str = "", description: str = ""
) -> StatsService:
    """Answer `$SRV.PING|INFO|STATS` as micro service `kind` with `stats` in the STATS data, from
    now until the stack unwinds (after the service's own stop, before NATS drains)."""
    svc = StatsService(nc, kind, stats, host=host, description=description)
    await svc.start()
    stack.push_async_callback(svc.stop)
    return svc


async def _build_and_start(config: Any, build: Build, stack: contextlib.AsyncExitStack) -> Service:
    service = await build(config, stack)
    await service.start()
    return service


async def serve(name: str, config: Any, build: Build, stop: asyncio.Event | None = None) -> None:
    log = logging.getLogger(name)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        # Startup waits for NATS and databases that may be down for long: a stop signal cancels
        # it (the stack still closes what was opened) instead of waiting until they come up.
        starting = asyncio.ensure_future(_build_and_start(config, build, stack))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("stopped before it was ready", extra={"event": "stopped"})
            return
        stack.push_async_callback(starting.result().stop)  # LIFO: runs before the connections close
        log.info("service ready", extra={"event": "ready"})
        await stop.wait()
        log.info("stopping", extra={"event": "stopping"})
    log.info("stopped", extra={"event": "stopped"})


def run(name: str, config_cls: type[C], build: Build, prefix: str | None = None) -> None:
    """Entry point for `python -m services.<name>`. Exit code 2 on a configuration error."""
    try:
        config = load_settings(config_cls, prefix or f"FLEETWATCH_{name.upper()}_")
        log_settings = getattr(config, "log", None) or load_settings(LogSettings, "FLEETWATCH_LOG_")
    except SettingsError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    register_secrets_from(config)
    setup_logging(name, log_settings)
    try:
        asyncio.run(serve(name, config, build))
    except KeyboardInterrupt:
        pass
    except natsconn.TlsVerifyError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
