"""Alerting: active alerts (from the alerter) and their history (ingest's `alert_events`), and
rules, checks, silences and notifiers edited at run time through the alerter's request/reply API
(`fleet.alerting.<resource>.<verb>`). Notifier secrets are accepted and never returned.

Every put carries the caller's role: the alerter binds a notifier's secrets to their destination
and to the role that set them, and answers 403/409 with the reason when an operator would move
an admin's secret or a destination changes without the secret given again."""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery, JSONBody, Parameter
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from libs.schemas import Codec, DecodeError, subjects
from libs.schemas.alerting import (
    AlertingReply,
    AlertRecord,
    Check,
    ConfigDelete,
    ConfigList,
    ConfigPut,
    Notifier,
    NotifierTestSend,
    NotifierView,
    RoleName,
    Rule,
    Silence,
)

from ..auditing import note
from ..authn import Actor, ActorDep
from ..errors import errors
from ..state import Gateway, GatewayDep
from .common import HOST_PATTERN, FromParam, LimitParam, OffsetParam, TimeParam, table_exists, time_range, typed, utc

NameParam = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64, description="name")]
_REPLY = Codec(AlertingReply)
_ENC = msgspec.json.Encoder()
ERRS = errors(400, 403, 404, 409, 502, 503, 504)


async def ask(
    gw: Gateway, resource: str, verb: str, body: msgspec.Struct | None = None, timeout: float = 15.0
) -> AlertingReply:
    try:
        msg = await gw.nc.request(
            subjects.alerting(resource, verb), _ENC.encode(body) if body is not None else b"{}", timeout=timeout
        )
    except NoRespondersError:
        raise HTTPException(status_code=503, detail="no alerter answers (not running)") from None
    except NatsTimeout:
        raise HTTPException(status_code=504, detail=f"the alerter did not answer within {timeout:g}s") from None
    try:
        reply = _REPLY.decode(msg.data)
    except DecodeError as exc:
        raise HTTPException(status_code=502, detail=f"the alerter answered something malformed: {exc}") from None
    if not reply.ok:
        raise HTTPException(status_code=reply.code if 400 <= reply.code < 600 else 502, detail=reply.error or "refused")
    return reply


class AlertList(msgspec.Struct, kw_only=True, frozen=True):
    items: list[AlertRecord]


class AlertHistoryItem(msgspec.Struct, kw_only=True, frozen=True):
    ts: float
    fingerprint: str
    rule: str
    host: str
    state: str
    since: float
    severity: str
    labels: dict[str, str]
    value: float | None = None
    threshold: float | None = None
    summary: str = ""


class AlertHistory(msgspec.Struct, kw_only=True, frozen=True):
    items: list[AlertHistoryItem]
    limit: int
    offset: int
    next_offset: int | None = None


class RuleList(msgspec.Struct, kw_only=True, frozen=True):
    items: list[Rule]


class CheckList(msgspec.Struct, kw_only=True, frozen=True):
    items: list[Check]


class SilenceList(msgspec.Struct, kw_only=True, frozen=True):
    items: list[Silence]


class NotifierList(msgspec.Struct, kw_only=True, frozen=True):
    items: list[NotifierView]


class Deleted(msgspec.Struct, kw_only=True, frozen=True):
    deleted: str


class SendResult(msgspec.Struct, kw_only=True, frozen=True):
    sent: bool
    notifier: NotifierView


class SendText(msgspec.Struct, kw_only=True, frozen=True):
    text: str = "fleetwatch test notification"


def _role(actor: Actor) -> RoleName:
    """The caller's role as the alerter reads it (the role guard admitted only known roles)."""
    return cast(RoleName, actor.role)


def _named(obj: Any, name: str, field: str = "name") -> Any:
    """The path names the item; a body naming another is a mistake, not a rename."""
    given = getattr(obj, field)
    if given and given != name:
        raise HTTPException(status_code=400, detail=f"{field} in the body ({given!r}) differs from the path ({name!r})")
    return msgspec.structs.replace(obj, **{field: name})


class AlertsController(Controller):
    path = "/api/v1/alerts"
    tags = ["alerting"]

    @get("/", summary="Active alerts (pending and firing); all=true adds resolved and inactive ones", responses=ERRS)
    async def active(self, gw: GatewayDep, all: FromQuery[bool] = False) -> AlertList:
        reply = await ask(gw, "alerts", "list", ConfigList(include_inactive=all))
        return AlertList(items=reply.alerts)

    @get("/history", summary="Alert state changes as stored by ingest, newest first")
    async def history(
        self,
        gw: GatewayDep,
        host: Annotated[str | None, Parameter(pattern=HOST_PATTERN, max_length=64)] = None,
        rule: Annotated[str | None, Parameter(max_length=64)] = None,
        from_: FromParam = None,
        to: TimeParam = None,
        limit: LimitParam = 100,
        offset: OffsetParam = 0,
    ) -> AlertHistory:
        f, t = time_range(from_, to, default_span=7 * 86400.0)
        if not await table_exists(gw.pool, "alert_events"):
            return AlertHistory(items=[], limit=limit, offset=offset)
        where = ["time >= $1", "time <= $2"]
        args: list[object] = [utc(f), utc(t)]
        if host:
            args.append(host)
            where.append(f"host = ${len(args)}")
        if rule:
            args.append(rule)
            where.append(f"rule = ${len(args)}")
        args += [limit + 1, offset]
        rows = await gw.pool.fetch(
            f"""SELECT extract(epoch FROM time)::float8 AS ts, fingerprint, rule, host, state, extract(epoch FROM since)::float8 AS since,
                       severity, labels::text AS labels, value, threshold, summary
                FROM alert_events WHERE {" AND ".join(where)} ORDER BY time DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
            *args,
        )
        items = [
            AlertHistoryItem(
                ts=r["ts"],
                fingerprint=r["fingerprint"],
                rule=r["rule"],
                host=r["host"],
                state=r["state"],
                since=r["since"],
                severity=r["severity"],
                labels=msgspec.json.decode(r["labels"]),
                value=r["value"],
                threshold=r["threshold"],
                summary=r["summary"],
            )
            for r in rows[:limit]
        ]
        return AlertHistory(
            items=items, limit=limit, offset=offset, next_offset=offset + limit if len(rows) > limit else None
        )


# Rules, checks and notifiers are the same three routes over the alerter's config API (list,
# put by name, delete by name); only the types differ, so each route comes from a factory.
def list_route(resource: str, listing: type, summary: str) -> HTTPRouteHandler:
    async def handler(self, gw):
        return listing(items=getattr(await ask(gw, resource, "list"), resource))

    return get("/", summary=summary, responses=ERRS)(
        typed(handler, f"list_{resource}", {"gw": GatewayDep, "return": listing})
    )


def put_route(resource: str, field: str, body: Any, view: type, summary: str) -> HTTPRouteHandler:
    """`body`: the request body's annotation (`JSONBody[Rule]`), written where the type is known."""

    async def handler(self, name, data, gw, actor):
        put = ConfigPut(**{field: _named(data, name)}, actor=actor.username, role=_role(actor))
        reply = await ask(gw, resource, "put", put)
        return getattr(reply, resource)[0]

    annotations = {"name": NameParam, "data": body, "gw": GatewayDep, "actor": ActorDep, "return": view}
    return put("/{name:str}", summary=summary, responses=ERRS)(typed(handler, f"put_{field}", annotations))


def delete_route(resource: str, field: str, summary: str) -> HTTPRouteHandler:
    async def handler(self, name, gw, actor):
        return await _delete(gw, resource, name, actor)

    annotations = {"name": NameParam, "gw": GatewayDep, "actor": ActorDep, "return": Deleted}
    return delete("/{name:str}", summary=summary, status_code=200, responses=ERRS)(
        typed(handler, f"delete_{field}", annotations)
    )


async def _delete(gw: Gateway, resource: str, name: str, actor: Actor) -> Deleted:
    await ask(gw, resource, "delete", ConfigDelete(name=name, actor=actor.username))
    return Deleted(deleted=name)


def config_controller(
    name: str, resource: str, field: str, body: Any, view: type, listing: type, summaries: tuple[str, str, str]
) -> type[Controller]:
    """A controller with the list, put and delete routes of one config resource."""
    routes = {
        f"list_{resource}": list_route(resource, listing, summaries[0]),
        f"put_{field}": put_route(resource, field, body, view, summaries[1]),
        f"delete_{field}": delete_route(resource, field, summaries[2]),
    }
    return type(
        name, (Controller,), {"__module__": __name__, "path": f"/api/v1/{resource}", "tags": ["alerting"], **routes}
    )


RulesController = config_controller(
    "RulesController",
    "rules",
    "rule",
    JSONBody[Rule],
    Rule,
    RuleList,
    ("Alert rules (built-in and stored)", "Create or replace a rule", "Delete a stored rule"),
)
ChecksController = config_controller(
    "ChecksController",
    "checks",
    "check",
    JSONBody[Check],
    Check,
    CheckList,
    ("HTTP health checks", "Create or replace a health check", "Delete a health check"),
)


class SilencesController(Controller):
    path = "/api/v1/silences"
    tags = ["alerting"]
    list_silences = list_route("silences", SilenceList, "Silences (matchers and time window)")

    @post("/", summary="Create a silence (id chosen by the alerter when empty)", status_code=201, responses=ERRS)
    async def create_silence(self, data: JSONBody[Silence], gw: GatewayDep, actor: ActorDep) -> Silence:
        data = msgspec.structs.replace(data, created_by=actor.username)
        put = ConfigPut(silence=data, actor=actor.username, role=_role(actor))
        made = (await ask(gw, "silences", "put", put)).silences[0]
        note(target=made.id)
        return made

    @delete("/{silence_id:str}", summary="Expire (delete) a silence", status_code=200, responses=ERRS)
    async def delete_silence(self, silence_id: NameParam, gw: GatewayDep, actor: ActorDep) -> Deleted:
        return await _delete(gw, "silences", silence_id, actor)


class NotifiersController(Controller):
    path = "/api/v1/notifiers"
    tags = ["alerting"]
    list_notifiers = list_route(
        "notifiers", NotifierList, "Notifiers and their routes; secrets are never returned, only whether set"
    )
    put_notifier = put_route(
        "notifiers",
        "notifier",
        JSONBody[Notifier],
        NotifierView,
        "Create or replace a notifier; an empty secret keeps the stored one while the destination "
        "stays; moving it needs the secret again and the role that set it",
    )
    delete_notifier = delete_route("notifiers", "notifier", "Delete a stored notifier")

    @post(
        "/{name:str}/test",
        summary="Send a test message through a notifier (502 with the reason when it fails)",
        status_code=200,
        responses=ERRS,
    )
    async def test_send(self, name: NameParam, gw: GatewayDep, data: JSONBody[SendText | None] = None) -> SendResult:
        text = data.text if data is not None else SendText().text
        reply = await ask(gw, "notifiers", "test", NotifierTestSend(name=name, text=text[:1000]), timeout=60)
        return SendResult(sent=True, notifier=reply.notifiers[0])
