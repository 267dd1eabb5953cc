"""User replication on the hosts: run a sync now (the host's replicator, `fleet.sync.<host>`),
and the last ReplicationStatus per host (ingest's `replica_status` table).

A status never carries a password hash: the replicator reports counts, timing and an error text
with anything hash-shaped masked."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, Parameter
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from libs.schemas import Codec, DecodeError, ReplicationStatus, subjects
from libs.schemas.replication import SyncRequest

from ..auditing import current_source
from ..authn import ActorDep
from ..errors import errors
from ..state import Gateway, GatewayDep
from .common import HostParam, table_exists

_STATUS = Codec(ReplicationStatus)
_REQUEST = Codec(SyncRequest)
_COLS = "host, extract(epoch FROM time)::float8 AS ts, ok, trigger, added, updated, removed, total, duration_ms::float8 AS duration_ms, error"
_LAST_ONE = f"SELECT {_COLS} FROM replica_status WHERE host = $1 ORDER BY time DESC LIMIT 1"
# The table holds months of statuses for every host: walk its (host, time) key one host at a time
# (a skip scan) instead of sorting the whole table as DISTINCT ON would.
_LAST_ALL = f"""
WITH RECURSIVE h(host) AS (
    (SELECT host FROM replica_status ORDER BY host LIMIT 1)
    UNION ALL
    SELECT (SELECT r.host FROM replica_status r WHERE r.host > h.host ORDER BY r.host LIMIT 1) FROM h WHERE h.host IS NOT NULL
)
SELECT s.* FROM h CROSS JOIN LATERAL (
    SELECT {_COLS} FROM replica_status r WHERE r.host = h.host ORDER BY time DESC LIMIT 1
) s
WHERE h.host IS NOT NULL
ORDER BY s.host
"""


class SyncAccepted(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    accepted: bool = True
    detail: str = "sync requested; its status follows on the stream (kind 'replica') and in GET .../replication"


class HostReplication(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    last: ReplicationStatus | None = None


class ReplicationList(msgspec.Struct, kw_only=True, frozen=True):
    items: list[ReplicationStatus]


def _status(r) -> ReplicationStatus:
    return ReplicationStatus(
        host=r["host"],
        ts=r["ts"],
        ok=r["ok"],
        trigger=r["trigger"],
        added=r["added"],
        updated=r["updated"],
        removed=r["removed"],
        total=r["total"],
        duration_ms=r["duration_ms"],
        error=r["error"],
    )


async def _last(gw: Gateway, host: str | None) -> list[ReplicationStatus]:
    if not await table_exists(gw.pool, "replica_status"):
        return []  # ingest has not created its tables yet: no status recorded anywhere
    rows = await gw.pool.fetch(_LAST_ALL) if host is None else await gw.pool.fetch(_LAST_ONE, host)
    return [_status(r) for r in rows]


class ReplicationController(Controller):
    path = "/api/v1"
    tags = ["replication"]

    @post(
        "/hosts/{host:str}/replication/sync",
        summary="Replicate the central users to a host now; answers that sync's status (or 202 with wait=false)",
        status_code=200,
        responses=errors(502, 503, 504),
    )
    async def sync(
        self,
        host: HostParam,
        gw: GatewayDep,
        actor: ActorDep,
        wait: FromQuery[bool] = True,
        timeout: Annotated[float, Parameter(gt=0, le=300, description="seconds to wait for the sync")] = 60.0,
    ) -> Response[ReplicationStatus | SyncAccepted]:
        body = _REQUEST.encode(SyncRequest(actor=actor.username, source=current_source()))
        subject = subjects.sync(host)
        if not wait:
            await gw.nc.publish(subject, body)
            return Response(SyncAccepted(host=host), status_code=202)
        try:
            msg = await gw.nc.request(subject, body, timeout=timeout)
        except NoRespondersError:
            raise HTTPException(
                status_code=503, detail=f"no replicator answers for host {host!r} (not running, or the host is unknown)"
            ) from None
        except NatsTimeout:
            raise HTTPException(
                status_code=504, detail=f"the replicator of host {host!r} did not finish a sync within {timeout:g}s"
            ) from None
        try:
            status = _STATUS.decode(msg.data)
        except DecodeError as exc:
            raise HTTPException(
                status_code=502, detail=f"the replicator of host {host!r} answered something malformed: {exc}"
            ) from None
        # A sync that ran and failed (central database unreachable...) is still this request's
        # answer: 200 with ok=false and the reason, as GET .../replication would show it.
        return Response(status, status_code=200)

    @get("/hosts/{host:str}/replication", summary="The last replication status of a host (null when none is recorded)")
    async def host_status(self, host: HostParam, gw: GatewayDep) -> HostReplication:
        found = await _last(gw, host)
        return HostReplication(host=host, last=found[0] if found else None)

    @get("/replication", summary="The last replication status of every host that reported one")
    async def all_status(self, gw: GatewayDep) -> ReplicationList:
        return ReplicationList(items=await _last(gw, None))
