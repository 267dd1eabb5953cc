"""Connecting to NATS the way every service must: credentials, reconnect forever, logged state."""

from __future__ import annotations

import asyncio
import logging
import ssl

import nats
from nats.aio.client import Client as NATS

from .settings import NatsSettings

log = logging.getLogger("fleetwatch.nats")


class Client(NATS):
    """nats-py's client, except that an expired authorization reconnects instead of closing.

    Short-lived credentials (the auth callout's user JWTs, see services/authcallout) end with
    the server's "User Authentication Expired"; nats-py treats every such -ERR as final and
    closes for good. Reconnecting asks the authorizer again: a host still registered is back
    within a reconnect wait, a revoked one stays out (and keeps retrying, like any refusal)."""

    async def _process_err(self, err_msg: str) -> None:
        if "authentication expired" in err_msg.lower():
            await self._process_op_err(nats.errors.Error(f"nats: {err_msg.strip(chr(39))}"))
            return
        await super()._process_err(err_msg)


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca or settings.tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=settings.tls_ca or None)
    if settings.tls_cert:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    return ctx


async def connect(settings: NatsSettings, name: str, *, retry_forever: bool = True, **overrides) -> NATS:
    """Connect, retrying the first connection too: a service started before nats-server waits for it."""

    async def error_cb(e: Exception) -> None:
        log.warning("nats error: %s", e, extra={"client": name})

    async def disconnected_cb() -> None:
        log.warning("nats disconnected", extra={"client": name})

    async def reconnected_cb() -> None:
        log.info("nats reconnected", extra={"client": name, "server": str(nc.connected_url.netloc if nc.connected_url else "")})

    async def closed_cb() -> None:
        log.info("nats connection closed", extra={"client": name})

    opts: dict = dict(
        servers=settings.servers,
        name=name,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        closed_cb=closed_cb,
        allow_reconnect=True,
        # One pass over the servers for the first connection (the loop below retries it, and
        # can tell an auth refusal from an absent server); unlimited reconnects once connected.
        max_reconnect_attempts=1,
        reconnect_time_wait=settings.reconnect_wait,
        connect_timeout=settings.connect_timeout,
        ping_interval=10,
        max_outstanding_pings=3,
    )
    if settings.user:
        opts["user"] = settings.user
        opts["password"] = settings.password
    if settings.creds:
        opts["user_credentials"] = settings.creds
    if settings.inbox_prefix:
        opts["inbox_prefix"] = settings.inbox_prefix
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    opts.update(overrides)

    delay = 0.2
    while True:
        nc = Client()
        try:
            await nc.connect(**opts)
            nc.options["max_reconnect_attempts"] = -1  # the default (60) gives up; a service never should
            log.info("nats connected", extra={"client": name, "server": str(nc.connected_url.netloc if nc.connected_url else "")})
            return nc
        except (nats.errors.NoServersError, OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
            last = getattr(nc, "last_error", None)
            refused = isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(last).lower()
            if not retry_forever or refused:
                raise (nats.errors.AuthorizationError() if refused else exc) from None
            log.warning("nats not reachable yet (%s); retrying in %.1fs", type(exc).__name__, delay, extra={"client": name})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
