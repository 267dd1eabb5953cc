"""`python -m services.gateway`: the Litestar app under uvicorn on FLEETWATCH_GATEWAY_HOST:PORT.

The runtime's usual shape: settings -> build -> start -> SIGTERM -> stop. NATS and the database
pool are opened by the app's lifespan (so tests and other servers can run `create_app` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

import uvicorn
import uvloop

from libs.runtime import run

from .app import create_app
from .config import GatewayConfig


class _Server(uvicorn.Server):
    """uvicorn minus its own signal handling: `serve()` would take SIGTERM and SIGINT over for
    its run (`capture_signals`), shutting the server down by itself and only then passing the
    signal on. The runtime's handler stops the service instead, in its order (live streams end,
    then the server)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayService:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.app = create_app(config)
        self.server = _Server(
            uvicorn.Config(
                self.app,
                host=config.host,
                port=config.port,
                log_config=None,  # our JSON logging, set up by the runtime
                access_log=False,  # off; were it on, hardening's filter masks query secrets
                # X-Forwarded-* only from the configured proxies. uvicorn's default trusts
                # loopback (and $FORWARDED_ALLOW_IPS), so a client on the gateway's own host, or
                # anything a local proxy passes through, could pick its own address.
                proxy_headers=bool(config.forwarded_allow_ips),
                forwarded_allow_ips=list(config.forwarded_allow_ips),
                lifespan="on",
                timeout_graceful_shutdown=3,
                ws_max_size=1 << 20,
                ssl_certfile=config.tls_cert or None,
                ssl_keyfile=config.tls_key or None,
            )
        )
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # startup failed: raise it
                raise RuntimeError("gateway server stopped during startup")
            await asyncio.sleep(0.05)
        # What is here once started (the app, the libraries, the seeded directory) mostly lives as
        # long as the process: out of the cyclic collector's way, so its full collections (one
        # every few fleet-wide bursts of frames) walk what changes, not ~75,000 objects that never
        # do, and stop pausing requests for 100 ms and more. Refcounting still frees them.
        gc.freeze()

    async def stop(self) -> None:
        gw = self.app.state.get("gateway")
        if gw is not None:
            for c in list(gw.hub.clients):
                c.dropped.set()  # live streams end now instead of holding shutdown
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)


async def build(config: GatewayConfig, stack: contextlib.AsyncExitStack) -> GatewayService:
    return GatewayService(config)


if __name__ == "__main__":
    # uvloop's event loop and (picked by uvicorn when installed) httptools' parser: per request
    # and per live-stream write the gateway's own work is then most of the cost, not the loop's.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    run("gateway", GatewayConfig, build)
