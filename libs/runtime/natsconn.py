"""Connecting to NATS the way every service must: credentials, reconnect forever, logged state."""

from __future__ import annotations

import asyncio
import contextlib
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


class TlsVerifyError(nats.errors.Error):
    """The server's certificate failed verification: retrying cannot help, so the first connect
    fails at once with what to check (a server that is simply not up yet is still waited for)."""

    def __init__(self, settings: NatsSettings, cause: BaseException) -> None:
        ca = settings.tls_ca or "unset, so the system's CAs"
        super().__init__(
            f"TLS certificate verification failed for {settings.url}: {getattr(cause, 'verify_message', '') or cause}; "
            f"FLEETWATCH_NATS_TLS_CA ({ca}) must be the CA that signed the server's certificate, "
            "and the host in FLEETWATCH_NATS_URL a name that certificate carries"
        )


def _cert_rejected(e: BaseException) -> bool:
    return isinstance(e, ssl.SSLCertVerificationError) or "certificate verify failed" in str(e).lower()


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca or settings.tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=settings.tls_ca or None)
    if settings.tls_cert:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key or None)
    return ctx


async def connect(settings: NatsSettings, name: str, *, retry_forever: bool = True, **overrides) -> NATS:
    """Connect, retrying the first connection too: a service started before nats-server waits for it."""

    # nats-py reports a failed TLS handshake here and then keeps retrying it without end.
    cert_rejected: asyncio.Future = asyncio.get_running_loop().create_future()
    user_error_cb = overrides.pop("error_cb", None)
    # The server answers a wrong password with -ERR 'Authorization Violation' and then closes the
    # socket; nats-py may raise (and keep as last_error) the reset that follows, so the refusal is
    # remembered from the error callback.
    auth_refused: list[Exception] = []

    async def error_cb(e: Exception) -> None:
        if _cert_rejected(e) and not cert_rejected.done():
            cert_rejected.set_result(e)
        if isinstance(e, nats.errors.AuthorizationError) or "authorization violation" in str(e).lower():
            auth_refused.append(e)
        log.warning("nats error: %s", e, extra={"client": name})
        if user_error_cb is not None:
            await user_error_cb(e)

    async def disconnected_cb() -> None:
        log.warning("nats disconnected", extra={"client": name})

    async def reconnected_cb() -> None:
        log.info(
            "nats reconnected",
            extra={"client": name, "server": str(nc.connected_url.netloc if nc.connected_url else "")},
        )

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
        attempt = asyncio.ensure_future(nc.connect(**opts))
        await asyncio.wait({attempt, cert_rejected}, return_when=asyncio.FIRST_COMPLETED)
        if cert_rejected.done() and not (attempt.done() and not attempt.cancelled() and attempt.exception() is None):
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            with contextlib.suppress(Exception):
                await nc.close()
            raise TlsVerifyError(settings, cert_rejected.result())
        try:
            await attempt
            nc.options["max_reconnect_attempts"] = -1  # the default (60) gives up; a service never should
            log.info(
                "nats connected",
                extra={"client": name, "server": str(nc.connected_url.netloc if nc.connected_url else "")},
            )
            return nc
        except (TimeoutError, nats.errors.NoServersError, OSError, nats.errors.Error) as exc:
            last = getattr(nc, "last_error", None)
            refused = (
                bool(auth_refused)
                or isinstance(exc, nats.errors.AuthorizationError)
                or "authorization" in str(last).lower()
            )
            if not retry_forever or refused:
                raise (nats.errors.AuthorizationError() if refused else exc) from None
            log.warning(
                "nats not reachable yet (%s); retrying in %.1fs", type(exc).__name__, delay, extra={"client": name}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
