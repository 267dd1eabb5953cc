"""Who did what: the audit log, filtered, newest first, paged.

Records are masked before they are stored (libs/runtime/audit.py); rows stored before that was
so are masked again on the way out, for every role: what audit shows is the same for all."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery, Parameter, QueryParameter

from libs.schemas import AuditRecord
from libs.schemas.secrets import mask_deep, mask_text

from ..state import GatewayDep
from .common import HOST_PATTERN, FromParam, LimitParam, OffsetParam, TimeParam, table_exists, time_range, utc


class AuditPage(msgspec.Struct, kw_only=True, frozen=True):
    items: list[AuditRecord]
    limit: int
    offset: int
    next_offset: int | None = None


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]

    @get("/", summary="Audit records, newest first")
    async def list_audit(
        self,
        gw: GatewayDep,
        host: Annotated[str | None, Parameter(pattern=HOST_PATTERN, max_length=64)] = None,
        # `actor` is the name of the injected caller, so the filter is bound under another name.
        by_actor: Annotated[str | None, QueryParameter(name="actor", max_length=64)] = None,
        action: Annotated[str | None, Parameter(max_length=100)] = None,
        result: FromQuery[Literal["ok", "error"] | None] = None,
        # the door: ui, cli, api-token, webhook, api (the gateway's), nats (a direct NATS caller)
        source: Annotated[str | None, Parameter(max_length=20, pattern=r"^[a-z-]{1,20}$")] = None,
        from_: FromParam = None,
        to: TimeParam = None,
        limit: LimitParam = 100,
        offset: OffsetParam = 0,
    ) -> AuditPage:
        f, t = time_range(from_, to, default_span=30 * 86400.0)
        if not await table_exists(gw.pool, "audit_log"):
            return AuditPage(items=[], limit=limit, offset=offset)
        rows = await gw.pool.fetch(
            """SELECT id, time, host, actor, action, target, params::text AS params, result, code, error, duration_ms, source
                 FROM audit_log
                WHERE time >= $1 AND time <= $2
                  AND ($3::text IS NULL OR host = $3) AND ($4::text IS NULL OR actor = $4)
                  AND ($5::text IS NULL OR action = $5) AND ($6::text IS NULL OR result = $6)
                  AND ($9::text IS NULL OR source = $9)
                ORDER BY time DESC, id LIMIT $7 OFFSET $8""",
            utc(f),
            utc(t),
            host,
            by_actor,
            action,
            result,
            limit + 1,
            offset,
            source,
        )
        items = [
            AuditRecord(
                id=r["id"],
                ts=r["time"].timestamp(),
                host=r["host"],
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                params=mask_deep(msgspec.json.decode(r["params"])),
                result=r["result"] if r["result"] in ("ok", "error") else "error",
                code=r["code"],
                error=mask_text(r["error"]),
                duration_ms=r["duration_ms"],
                source=r["source"],
            )
            for r in rows[:limit]
        ]
        return AuditPage(
            items=items, limit=limit, offset=offset, next_offset=offset + limit if len(rows) > limit else None
        )
