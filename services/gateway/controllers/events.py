"""App state changes, health results, alerts and replication runs: filtered, newest first, paged."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery, Parameter

from ..state import GatewayDep
from .common import HOST_PATTERN, FromParam, LimitParam, OffsetParam, TimeParam, table_exists, time_range, utc

Kind = Literal["app", "health", "alert", "replica"]
# kind -> (table, host column or None)
TABLES: dict[str, tuple[str, str | None]] = {
    "app": ("app_events", "host"),
    "health": ("health_results", None),
    "alert": ("alert_events", "host"),
    "replica": ("replica_status", "host"),
}


class EventOut(msgspec.Struct, kw_only=True, frozen=True):
    kind: str
    ts: float
    host: str
    data: dict[str, Any]


class EventPage(msgspec.Struct, kw_only=True, frozen=True):
    items: list[EventOut]
    limit: int
    offset: int
    next_offset: int | None = None


class EventsController(Controller):
    path = "/api/v1/events"
    tags = ["events"]

    @get("/", summary="Events, newest first")
    async def list_events(
        self,
        gw: GatewayDep,
        kind: FromQuery[Kind | None] = None,
        host: Annotated[str | None, Parameter(pattern=HOST_PATTERN, max_length=64)] = None,
        from_: FromParam = None,
        to: TimeParam = None,
        limit: LimitParam = 100,
        offset: OffsetParam = 0,
    ) -> EventPage:
        f, t = time_range(from_, to, default_span=7 * 86400.0)
        kinds = [kind] if kind else list(TABLES)
        found: list[tuple] = []
        for k in kinds:
            table, host_col = TABLES[k]
            if host and host_col is None:
                continue
            if not await table_exists(gw.pool, table):
                continue
            where = "time >= $1 AND time <= $2" + (f" AND {host_col} = $4" if host else "")
            args: list = [utc(f), utc(t), offset + limit + 1] + ([host] if host else [])
            hexpr = host_col or "''"
            rows = await gw.pool.fetch(
                f"SELECT time, {hexpr} AS host, (to_jsonb(e) - 'time')::text AS data FROM {table} e WHERE {where} ORDER BY time DESC LIMIT $3",
                *args,
            )
            found += [(r["time"].timestamp(), k, r["host"], r["data"]) for r in rows]
        found.sort(key=lambda x: x[0], reverse=True)
        page = found[offset : offset + limit]
        items = [EventOut(kind=k, ts=ts, host=h, data=msgspec.json.decode(d)) for ts, k, h, d in page]
        more = len(found) > offset + limit
        return EventPage(items=items, limit=limit, offset=offset, next_offset=offset + limit if more else None)
