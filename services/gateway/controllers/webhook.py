"""`POST /api/v1/webhook/command`: control requests from external automation, authenticated by
an HMAC-SHA256 signature instead of a user token.

    X-Fleetwatch-Timestamp: <unix seconds>
    X-Fleetwatch-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The timestamp must be within `webhook_window_s` of the gateway's clock and a signature is
accepted once (a replay within the window is 409), so a captured request cannot be sent again,
to this gateway or another replica: the signatures seen are in the KV bucket `webhook_replay`
(create-only, the first replica wins; keys expire after twice the window).
The audit record's actor is `webhook:<actor from the body>`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, post
from litestar.exceptions import HTTPException, NotAuthorizedException
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from libs.runtime.jetstream import cluster_size, ensure_bucket, replicas_for
from libs.schemas import Message, check_host_id
from libs.schemas.control import AppListReply, AppReply, JobListReply, JobReply
from libs.schemas.ids import InvalidId
from libs.schemas.streams import WEBHOOK_REPLAY_BUCKET

from ..errors import errors
from ..state import Gateway, GatewayDep
from .ctlclient import call
from .policy import run_as_fields

TS_HEADER = "x-fleetwatch-timestamp"
SIG_HEADER = "x-fleetwatch-signature"
MAX_BODY = 64 * 1024

# What automation may do: operator-level actions, never register/remove.
VERBS: dict[str, type[Message]] = {
    "apps.list": AppListReply,
    "apps.status": AppReply,
    "apps.start": AppReply,
    "apps.stop": AppReply,
    "apps.restart": AppReply,
    "jobs.run": JobReply,
    "jobs.get": JobReply,
    "jobs.list": JobListReply,
    "jobs.stop": JobReply,
}


class WebhookCommand(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    verb: Literal[
        "apps.list",
        "apps.status",
        "apps.start",
        "apps.stop",
        "apps.restart",
        "jobs.run",
        "jobs.get",
        "jobs.list",
        "jobs.stop",
    ]
    params: dict[str, Any] = {}
    actor: str = "automation"


_DEC = msgspec.json.Decoder(WebhookCommand)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class ReplayGuard:
    """Signatures seen within the window, in KV shared by every gateway replica."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.kv: KeyValue | None = None

    async def first_time(self, sig: str, ts: str) -> bool:
        kv = self.kv
        if kv is None:
            spec = msgspec.structs.replace(
                WEBHOOK_REPLAY_BUCKET,
                ttl_s=max(WEBHOOK_REPLAY_BUCKET.ttl_s, math.ceil(2 * self.gw.config.webhook_window_s)),
            )
            kv = self.kv = await ensure_bucket(
                self.gw.nc.jetstream(), spec, replicas_for(await cluster_size(self.gw.nc))
            )
        try:
            await kv.create(sig.removeprefix("sha256="), ts.encode())
        except KeyWrongLastSequenceError:
            return False
        return True


class WebhookController(Controller):
    path = "/api/v1/webhook"
    tags = ["webhook"]

    @post(
        "/command",
        summary="Signed control request from automation (HMAC-SHA256, timestamp window)",
        status_code=200,
        responses=errors(400, 401, 403, 404, 409, 429, 502, 503, 504),
    )
    async def command(self, request: Request, gw: GatewayDep) -> dict[str, Any]:
        secret = gw.config.webhook_secret
        if not secret:
            raise HTTPException(
                status_code=503, detail="the webhook is not configured (FLEETWATCH_GATEWAY_WEBHOOK_SECRET is empty)"
            )
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(status_code=413, detail=f"body larger than {MAX_BODY} bytes")
        ts = request.headers.get(TS_HEADER, "")
        sig = request.headers.get(SIG_HEADER, "")
        try:
            ts_f = float(ts) if ts.isascii() else math.nan
        except ValueError:
            ts_f = math.nan
        # float() also reads "nan" and "inf": NaN compares False with everything, so without
        # this a "nan" timestamp would pass the window check below forever (replayable once the
        # replay record expires).
        if not math.isfinite(ts_f):
            raise NotAuthorizedException(
                detail=f"missing or malformed {TS_HEADER} header (unix seconds, a finite number)"
            )
        window = gw.config.webhook_window_s
        if abs(time.time() - ts_f) > window:
            raise NotAuthorizedException(detail=f"timestamp outside the {window:g}s window (check the sender's clock)")
        # hmac.compare_digest raises TypeError for non-ASCII text (headers arrive as latin-1).
        if not sig or not sig.isascii() or not hmac.compare_digest(sig, sign(secret, ts, body)):
            raise NotAuthorizedException(detail="bad signature")
        guard: ReplayGuard = request.app.state.setdefault("webhook_replay", ReplayGuard(gw))
        try:
            first = await guard.first_time(sig, ts)
        except Exception:  # noqa: BLE001 - without the shared record a replay cannot be ruled out
            raise HTTPException(
                status_code=503, detail="the replay guard (NATS KV) is not reachable; try again"
            ) from None
        if not first:
            raise HTTPException(status_code=409, detail="this signed request was already received (replay)")
        try:
            cmd = _DEC.decode(body)
            check_host_id(cmd.host)
        except (msgspec.DecodeError, InvalidId) as exc:
            raise HTTPException(status_code=400, detail=f"bad command: {exc}") from None
        # Who asks is the gateway's to say: automation acts as an operator, whatever it sends.
        params = {k: v for k, v in cmd.params.items() if k not in ("actor", "role", "policy")}
        if cmd.verb == "jobs.run":
            params.update(await run_as_fields(gw, cmd.host, "operator"))
        # The actor lands in audit records and their table: printable characters only.
        actor = "".join(c for c in cmd.actor[:64] if c.isprintable())
        reply = await call(
            gw.nc, cmd.host, cmd.verb, {**params, "actor": f"webhook:{actor}"}, VERBS[cmd.verb], timeout=60
        )
        return msgspec.to_builtins(reply)
