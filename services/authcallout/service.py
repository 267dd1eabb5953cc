"""Answer `$SYS.REQ.USER.AUTH`: a connection that matched no configured user gets in only as
`agent-<host>` with the password the gateway issued when the host was registered, and only
with that host's permissions (the same ones nats-config gives static agents). Every refusal
has a reason in the log; the password never does."""

from __future__ import annotations

import contextlib
import logging

import nkeys
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from libs.runtime import ServiceStats, open_nats, open_stats
from libs.runtime.jetstream import cluster_size, ensure_bucket, replicas_for, wait_jetstream
from libs.schemas import subjects
from libs.schemas.ids import check_host_id
from libs.schemas.registration import AGENT_RECORD, secret_matches
from libs.schemas.streams import AGENTS_BUCKET

from . import jwt
from .config import AuthCalloutConfig

log = logging.getLogger("fleetwatch.authcallout")

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
AGENT_PREFIX = "agent-"


class AuthCallout:
    def __init__(self, config: AuthCalloutConfig, nc: NATS) -> None:
        if not config.issuer_seed:
            raise ValueError(
                "FLEETWATCH_AUTHCALLOUT_ISSUER_SEED is required (nats-config writes it to env/authcallout.env)"
            )
        self.config = config
        self.nc = nc
        self.signer = nkeys.from_seed(config.issuer_seed.encode())
        self.kv: KeyValue | None = None  # bucket agents, opened by start()
        self.granted = 0
        self.refused = 0
        self.malformed = 0
        self.stats = ServiceStats()
        self.stats.counter("granted", lambda: self.granted)
        self.stats.counter("denied", lambda: self.refused)
        self.stats.counter("messages_in", lambda: self.granted + self.refused + self.malformed)
        self.stats.counter("errors", lambda: self.malformed)

    async def start(self) -> None:
        # The bucket may not exist yet (no host registered, or provisioning still running): make
        # it as provisioning would, so the callout never refuses to start over an empty fleet.
        size = await cluster_size(self.nc)
        if size > 1:
            await wait_jetstream(self.nc)
        self.kv = await ensure_bucket(self.nc.jetstream(), AGENTS_BUCKET, replicas_for(size))
        await self.nc.subscribe(AUTH_SUBJECT, cb=self._handle)
        await self.nc.flush()

    async def stop(self) -> None:
        pass

    async def decide(self, user: str, password: str) -> tuple[str, str]:
        """(host, "") when allowed, ("", reason) when not."""
        if not user.startswith(AGENT_PREFIX):
            return "", "unknown user"
        try:
            host = check_host_id(user[len(AGENT_PREFIX) :])
        except ValueError:
            return "", "unknown user"
        if self.kv is None:
            raise RuntimeError("AuthCallout.decide() before start()")
        try:
            entry = await self.kv.get(host)
        except (KeyNotFoundError, NotFoundError):
            return "", f"host {host} is not registered (or was revoked)"
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return "", f"host {host} is not registered (or was revoked)"
        record = AGENT_RECORD.decode(entry.value)
        if not secret_matches(record, password):
            return "", f"wrong password for host {host}"
        return host, ""

    async def _handle(self, msg) -> None:
        if not msg.reply:
            return
        try:
            req = jwt.decode(msg.data)
            info = req["nats"]
            user_nkey = info["user_nkey"]
            server_id = info["server_id"]["id"]
            opts = info.get("connect_opts") or {}
        except (jwt.BadToken, KeyError, TypeError) as exc:
            self.malformed += 1
            log.warning("malformed authorization request: %s", exc)
            return  # no reply: the server refuses the connection on its own timeout
        host, reason = await self.decide(str(opts.get("user") or ""), str(opts.get("pass") or ""))
        if host:
            # The same grants nats-config gives a static agent (libs.embedded.natsconfig.agent_permissions).
            perms = {
                "publish": {"allow": subjects.host_subjects_publish(host)},
                "subscribe": {"allow": subjects.host_subjects_subscribe(host)},
            }
            user_jwt = jwt.encode(
                jwt.user_claims(user_nkey, f"{AGENT_PREFIX}{host}", self.config.account, perms, self.config.ttl_s),
                self.signer,
            )
            resp = jwt.response_claims(user_nkey, server_id, user_jwt=user_jwt)
            self.granted += 1
            log.info("agent admitted", extra={"host": host, "client": (info.get("client_info") or {}).get("host", "")})
        else:
            resp = jwt.response_claims(user_nkey, server_id, error=reason)
            self.refused += 1
            log.warning("login refused: %s", reason, extra={"user": str(opts.get("user") or "")[:80]})
        await self.nc.publish(msg.reply, jwt.encode(resp, self.signer).encode())


async def build(config: AuthCalloutConfig, stack: contextlib.AsyncExitStack) -> AuthCallout:
    nc = await open_nats(stack, config.nats, "authcallout")
    service = AuthCallout(config, nc)
    await open_stats(stack, nc, "authcallout", service.stats, description="fleetwatch NATS logins of registered agents")
    return service
