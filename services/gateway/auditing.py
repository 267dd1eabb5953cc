"""Every change through the gateway is audited once, whoever makes it and through whichever door.

One middleware records each mutating request (POST/PUT/PATCH/DELETE) on the AUDIT stream after
it is answered: who (the authenticated user, the name a login tried, or `webhook:<actor>`), the
door (`source`), the route as the action, its path parameters (or what the handler names) as the
target, and the outcome. Request bodies are never copied into the record: a password, a notifier's
token or a job's env cannot reach audit through here. Routes whose change is audited where it is
made (the commander, the replicator, the policy controller) are listed in DOWNSTREAM; the door is
handed to them through `current_source` (ctlclient puts it into control requests).

The door: an API token is `api-token`; the webhook route is `webhook`; a session says `ui` or
`cli` with the X-Fleetwatch-Client header (the web UI and the CLI send it). The header only labels
the door and grants nothing; a missing or unknown value is ignored and the door is `api`."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from libs.runtime import audit
from libs.schemas import AuditRecord, subjects

log = logging.getLogger("fleetwatch.gateway.audit")

CLIENT_HEADER = b"x-fleetwatch-client"
CLIENT_DOORS = frozenset({"ui", "cli"})
SOURCES = ("ui", "cli", "api-token", "webhook", "api")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDIT_HOST = "_fleet"  # audit subject token of changes that belong to no host
WEBHOOK_ROUTE = "POST /api/v1/webhook/command"

# Changes audited where they are made, with the source handed on: one record per change.
DOWNSTREAM = frozenset(
    {
        "POST /api/v1/hosts/{host}/apps",
        "DELETE /api/v1/hosts/{host}/apps/{name}",
        "POST /api/v1/hosts/{host}/apps/{name}/start",
        "POST /api/v1/hosts/{host}/apps/{name}/stop",
        "POST /api/v1/hosts/{host}/apps/{name}/restart",
        "POST /api/v1/hosts/{host}/jobs",
        "POST /api/v1/hosts/{host}/jobs/cleanup",
        "POST /api/v1/hosts/{host}/jobs/{job_id}/stop",
        "POST /api/v1/hosts/{host}/jobs/{job_id}/restart",
        WEBHOOK_ROUTE,
        "POST /api/v1/hosts/{host}/replication/sync",
        "PUT /api/v1/policy",
        "DELETE /api/v1/policy",
        "PUT /api/v1/hosts/{host}/policy",
        "DELETE /api/v1/hosts/{host}/policy",
    }
)

# The request being served: its door is asked for once the role guard has named the caller.
_serving: contextvars.ContextVar[tuple[Scope, str] | None] = contextvars.ContextVar("fleetwatch_req", default=None)


def current_source() -> str:
    """The door of the request being served (for ctlclient and the self-auditing controllers)."""
    serving = _serving.get()
    return door(*serving) if serving is not None else "api"


def door(scope: Scope, route: str) -> str:
    if route == WEBHOOK_ROUTE:
        return "webhook"
    actor = (scope.get("state") or {}).get("actor")
    if actor is not None and getattr(actor, "via", "") == "api_token":
        return "api-token"
    for k, v in scope.get("headers", ()):
        if k == CLIENT_HEADER:
            label = v.decode("latin-1").strip().lower()
            return label if label in CLIENT_DOORS else "api"
    return "api"


# What the handler of the request being served says about its change (see `note`).
_notes: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("fleetwatch_audit", default=None)


def note(*, target: str | None = None, actor: str | None = None, **params: Any) -> None:
    """A handler names what it changed (a created user, a login's username) for its audit record.
    Only non-secret values belong in params: they are stored, masked, for 400 days."""
    notes = _notes.get()
    if notes is None:
        return  # not serving a mutating request (a test calling the handler's code directly)
    if target is not None:
        notes["target"] = str(target)
    if actor is not None:
        notes["actor"] = "".join(c for c in actor[:64] if c.isprintable())
    notes.setdefault("params", {}).update(params)


def changes(scope: Scope) -> bool:
    """False for a handler marked `opt={"audit": False}`: a read sent as POST (Grafana's queries)
    or data coming in (remote-write samples, counted in /metrics): neither changes anything a
    person is accountable for, and auditing them would bury the changes under thousands of rows."""
    handler = scope.get("route_handler")
    return (getattr(handler, "opt", None) or {}).get("audit", True) is not False


def _action(scope: Scope, route: str) -> str:
    handler = scope.get("route_handler")
    name = getattr(handler, "handler_name", "") or route
    tags = handler.resolve_tags() if handler is not None and hasattr(handler, "resolve_tags") else []
    tag = sorted(tags)[0] if tags else "gateway"
    return f"{tag}.{name}"


def audit_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in MUTATING:
            await app(scope, receive, send)
            return
        route = f"{scope['method']} {scope.get('path_template') or scope['path']}"
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        notes: dict[str, Any] = {}
        token, ntoken = _serving.set((scope, route)), _notes.set(notes)
        try:
            await app(scope, receive, send_wrapper)
        finally:
            _serving.reset(token)
            _notes.reset(ntoken)
            if route not in DOWNSTREAM and changes(scope):
                await _record(scope, route, status, (time.perf_counter() - t0) * 1000, notes)

    return middleware


async def _record(scope: Scope, route: str, status: int, duration_ms: float, notes: dict[str, Any]) -> None:
    state = scope.get("state") or {}
    who = state.get("actor")
    actor = notes.get("actor") or (who.username if who is not None else "")
    if not actor:
        return  # refused before anyone was known (no or a bad token): nothing was changed by anyone
    gw = scope["app"].state.get("gateway")
    if gw is None:
        return
    path_params = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
    target = notes.get("target") or "/".join(path_params.values())
    host = path_params.get("host", AUDIT_HOST)
    try:
        subjects.audit(host)
    except Exception:
        host = AUDIT_HOST  # a refused, malformed host name: the attempt is still audited
    params = {**path_params, **notes.get("params", {})}
    if who is not None and who.token_id:
        params["token_id"] = who.token_id
    rec = AuditRecord(
        id=uuid.uuid4().hex,
        ts=time.time(),
        host=host,
        actor=actor,
        action=_action(scope, route),
        target=target,
        params=params,
        result="ok" if status < 400 else "error",
        code=status,
        duration_ms=round(duration_ms, 3),
        source=door(scope, route),
    )
    try:
        await audit.record(gw.nc.jetstream(), rec)
    except Exception as exc:  # the answer is already sent; a failed audit is logged, never hidden
        log.error("audit record not stored: %s", exc, extra={"action": rec.action})
