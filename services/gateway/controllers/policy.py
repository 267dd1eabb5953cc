"""The run-as policy of a host's jobs and apps (admin only): who they run as, and what an operator
may run there. Stored in KV `fleet_policy`: one key per host, and FLEET_KEY for the fleet's
default; a host without either gets its commander's configured default (the built-in one, unless
the host's owner set FLEETWATCH_COMMANDER_RUN_AS / _OPERATOR_*).

The policy and the caller's role travel in every jobs.run, jobs.restart and apps.register
(`run_as_fields`), and the commander enforces them (services/commander/policy.py): a gateway is
the only service allowed to publish control requests, so it is the one that says who asks."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any, Literal

import msgspec
from litestar import Controller, delete, get, put
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import JSONBody
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from libs.runtime import audit
from libs.runtime.jetstream import cluster_size, ensure_bucket, replicas_for
from libs.schemas import AuditRecord
from libs.schemas.control import DEFAULT_RUN_POLICY, RunPolicy, policy_problems
from libs.schemas.streams import POLICY_BUCKET

from ..auditing import current_source
from ..authn import Actor, ActorDep
from ..errors import errors
from ..state import Gateway, GatewayDep
from .common import HostParam

FLEET_KEY = "fleet.default"  # a dot: never a host id
AUDIT_RETRY_S = 4.0
AUDIT_HOST = "_fleet"  # audit subject token of fleet-wide changes


class PolicyEntry(msgspec.Struct, kw_only=True, frozen=True):
    policy: RunPolicy
    updated_by: str = ""
    updated_at: float = 0.0


class PolicyView(msgspec.Struct, kw_only=True, frozen=True):
    host: str  # "" for the fleet's default
    # host: the host's own; fleet: the fleet's default; commander: none stored, so the commander's
    # configured default applies (shown as the built-in one, which its owner may have changed).
    source: Literal["host", "fleet", "commander"]
    policy: RunPolicy
    updated_by: str = ""
    updated_at: float = 0.0


_ENTRY = msgspec.json.Decoder(PolicyEntry)
_ENC = msgspec.json.Encoder()


async def _bucket(gw: Gateway, create: bool = False):
    js = gw.nc.jetstream()
    try:
        return await js.key_value(POLICY_BUCKET.bucket)
    except BucketNotFoundError:
        if not create:
            return None
    except Exception:
        raise HTTPException(status_code=503, detail="JetStream is not reachable, so the run-as policy is not") from None
    return await ensure_bucket(js, POLICY_BUCKET, replicas_for(await cluster_size(gw.nc)))


async def _entry(kv, key: str) -> PolicyEntry | None:
    try:
        e = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        return None
    except Exception:
        # Never "no policy" when the store is away: the host's default may allow more.
        raise HTTPException(status_code=503, detail="the run-as policy could not be read; try again") from None
    return _ENTRY.decode(e.value) if e.value else None


async def effective(gw: Gateway, host: str) -> PolicyView:
    """The policy a host's jobs and apps get: its own, else the fleet's; `host` "": the fleet's."""
    kv = await _bucket(gw)
    own = await _entry(kv, host) if kv is not None and host else None
    if own is not None:
        return PolicyView(host=host, source="host", **msgspec.structs.asdict(own))
    fleet = await _entry(kv, FLEET_KEY) if kv is not None else None
    if fleet is not None:
        return PolicyView(host=host, source="fleet", **msgspec.structs.asdict(fleet))
    return PolicyView(host=host, source="commander", policy=DEFAULT_RUN_POLICY)


async def run_as_fields(gw: Gateway, host: str, role: str) -> dict[str, Any]:
    """What a jobs.run / jobs.restart / apps.register carries besides its own fields: the caller's
    role, and the host's policy when one is stored (else the commander applies its own)."""
    view = await effective(gw, host)
    out: dict[str, Any] = {"role": role}
    if view.source != "commander":
        out["policy"] = msgspec.to_builtins(view.policy)
    return out


async def _audit(gw: Gateway, actor: Actor, host: str, action: str, params: dict) -> None:
    rec = AuditRecord(
        id=uuid.uuid4().hex,
        ts=time.time(),
        host=host or AUDIT_HOST,
        actor=actor.username,
        action=action,
        target=host or FLEET_KEY,
        params=params,
        source=current_source(),
    )
    # A few seconds, not the default's retries: the admin is waiting for this answer.
    await audit.record(gw.nc.jetstream(), rec, retry_s=AUDIT_RETRY_S)


async def _store(gw: Gateway, actor: Actor, host: str, policy: RunPolicy) -> PolicyView:
    problems = policy_problems(policy)
    if problems:
        raise ClientException(detail="run-as policy not accepted: " + "; ".join(problems))
    entry = PolicyEntry(policy=policy, updated_by=actor.username, updated_at=time.time())
    kv = await _bucket(gw, create=True)
    await kv.put(host or FLEET_KEY, _ENC.encode(entry))
    await _audit(gw, actor, host, "policy.put", msgspec.to_builtins(policy))
    return PolicyView(
        host=host,
        source="host" if host else "fleet",
        policy=policy,
        updated_by=actor.username,
        updated_at=entry.updated_at,
    )


async def _drop(gw: Gateway, actor: Actor, host: str) -> None:
    kv = await _bucket(gw)
    if kv is None or await _entry(kv, host or FLEET_KEY) is None:
        raise NotFoundException(detail=f"host {host!r} has no run-as policy of its own" if host else "no fleet policy")
    with contextlib.suppress(KeyNotFoundError, NotFoundError):
        await kv.delete(host or FLEET_KEY)
    await _audit(gw, actor, host, "policy.delete", {})


class PolicyController(Controller):
    path = "/api/v1"
    tags = ["policy"]

    @get("/policy", summary="The fleet's default run-as policy of jobs and apps", responses=errors(403, 503))
    async def get_fleet(self, gw: GatewayDep) -> PolicyView:
        return await effective(gw, "")

    @put(
        "/policy",
        summary="Set the fleet's default run-as policy (hosts without their own)",
        responses=errors(400, 403, 503),
    )
    async def put_fleet(self, data: JSONBody[RunPolicy], gw: GatewayDep, actor: ActorDep) -> PolicyView:
        return await _store(gw, actor, "", data)

    @get("/hosts/{host:str}/policy", summary="The run-as policy a host's jobs and apps get", responses=errors(403, 503))
    async def get_host(self, host: HostParam, gw: GatewayDep) -> PolicyView:
        return await effective(gw, host)

    @put(
        "/hosts/{host:str}/policy",
        summary="Set a host's run-as policy: run-as user, operators' allowlist and users",
        responses=errors(400, 403, 503),
    )
    async def put_host(self, host: HostParam, data: JSONBody[RunPolicy], gw: GatewayDep, actor: ActorDep) -> PolicyView:
        return await _store(gw, actor, host, data)

    @delete(
        "/policy",
        summary="Drop the fleet's default run-as policy (commanders apply their own)",
        status_code=204,
        responses=errors(403, 404, 503),
    )
    async def delete_fleet(self, gw: GatewayDep, actor: ActorDep) -> None:
        await _drop(gw, actor, "")

    @delete(
        "/hosts/{host:str}/policy",
        summary="Drop a host's own run-as policy (the fleet's default applies again)",
        status_code=204,
        responses=errors(403, 404, 503),
    )
    async def delete_host(self, host: HostParam, gw: GatewayDep, actor: ActorDep) -> None:
        await _drop(gw, actor, host)
