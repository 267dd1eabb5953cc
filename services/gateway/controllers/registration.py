"""Agent registration: an admin adds a host and gets its agents' NATS credentials, once; removing
the registration cuts the host's agents off (the auth callout service stops admitting them and
their current authorization runs out within its TTL). No NATS restart, no config edit.

The password is 32 random bytes shown only in the 201 answer; KV `fleet_agents` keeps its
sha256 (see libs.schemas.registration)."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Annotated

import msgspec
from litestar import Controller, delete
from litestar.exceptions import HTTPException, NotFoundException
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from libs.runtime.jetstream import cluster_size, ensure_bucket, replicas_for
from libs.schemas import subjects
from libs.schemas.ids import check_host_id
from libs.schemas.registration import AGENT_RECORD, AgentRecord, hash_secret
from libs.schemas.streams import AGENTS_BUCKET

from ..authn import Actor, ActorDep
from ..state import Gateway, GatewayDep
from .common import HostParam

AGENT_PREFIX = "agent-"


class HostRegistration(msgspec.Struct, kw_only=True, frozen=True):
    host: Annotated[
        str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="host id (hostname with dots as '-')")
    ]
    labels: dict[str, str] = {}


class AgentCredentials(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    user: str
    password: str
    inbox_prefix: str
    # The same variables as nats-config's env/agent-<host>.env, ready for `fleetwatch agent install --credentials`.
    env: str
    detail: str = "shown once: store it now; the gateway keeps only a hash"


async def _bucket(gw: Gateway, create: bool = False):
    js = gw.nc.jetstream()
    try:
        return await js.key_value(AGENTS_BUCKET.bucket)
    except BucketNotFoundError:
        if not create:
            return None
    except Exception:
        raise HTTPException(status_code=503, detail="JetStream is not reachable") from None
    # The first registration makes the bucket (the same spec and replicas provisioning uses).
    return await ensure_bucket(js, AGENTS_BUCKET, replicas_for(await cluster_size(gw.nc)))


async def register_host(data: HostRegistration, gw: Gateway, actor: Actor) -> AgentCredentials:
    """POST /api/v1/hosts (served by HostsController: Litestar allows one controller per path)."""
    host = check_host_id(data.host)
    kv = await _bucket(gw, create=True)
    password = secrets.token_urlsafe(32)
    record = AgentRecord(
        host=host,
        secret_sha256=hash_secret(password),
        created_at=time.time(),
        created_by=actor.username,
        labels=dict(data.labels),
    )
    try:
        await kv.create(host, AGENT_RECORD.encode(record))
    except KeyWrongLastSequenceError:
        raise HTTPException(
            status_code=409, detail=f"host {host!r} is already registered; remove it first to issue new credentials"
        ) from None
    user = f"{AGENT_PREFIX}{host}"
    inbox = subjects.inbox_prefix(host)
    env = f"FLEETWATCH_NATS_USER={user}\nFLEETWATCH_NATS_PASSWORD={password}\nFLEETWATCH_NATS_INBOX_PREFIX={inbox}\nFLEETWATCH_HOST_ID={host}\n"
    return AgentCredentials(host=host, user=user, password=password, inbox_prefix=inbox, env=env)


class RegistrationController(Controller):
    path = "/api/v1/hosts"
    tags = ["hosts"]

    @delete(
        "/{host:str}/registration",
        summary="Revoke a registered host: its agents are cut off within the callout TTL",
        status_code=204,
    )
    async def revoke(self, host: HostParam, gw: GatewayDep, actor: ActorDep) -> None:
        kv = await _bucket(gw)
        entry = None
        if kv is not None:
            with contextlib.suppress(KeyNotFoundError, NotFoundError):
                entry = await kv.get(host)
        if entry is None or entry.value is None:
            raise NotFoundException(detail=f"host {host!r} is not registered")
        await kv.purge(host)
