"""Live events over SSE (`/api/v1/stream`) and WebSocket (`/api/v1/ws`): the same events, the same
filters (`hosts`, `kinds`), a bounded queue per client, heartbeats, Last-Event-ID replay, and a
connection cap answered with 503.

`user` events (who was created, renamed, deactivated) are what GET /api/v1/users shows, so they
go only to the roles that route admits: asked for by anyone else they are refused (403), and
left out of the default set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated

from litestar import Controller, Request, Response, WebSocket, get, websocket
from litestar.exceptions import ClientException, HTTPException, PermissionDeniedException, WebSocketDisconnect
from litestar.params import HeaderParameter, Parameter

from ..authn import Actor, ActorDep
from ..errors import errors
from ..hub import DEFAULT_KINDS, KINDS, Client, Hub, HubFull
from ..roles import allows
from ..state import GatewayDep

log = logging.getLogger("fleetwatch.gateway.stream")

HostsParam = Annotated[
    str | None, Parameter(max_length=10_000, pattern=r"^[A-Za-z0-9_,-]*$", description="comma-separated host ids")
]
KindsParam = Annotated[
    str | None,
    Parameter(max_length=200, description="comma-separated: " + ",".join(KINDS) + " (default: all but procs)"),
]
HEARTBEAT = b": heartbeat\n\n"


def parse_filters(hosts: str | None, kinds: str | None) -> tuple[list[str] | None, list[str] | None]:
    hs = [h for h in (hosts or "").split(",") if h] or None
    ks = [k.strip() for k in (kinds or "").split(",") if k.strip()] or None
    bad = [k for k in ks or () if k not in KINDS]
    if bad:
        raise ClientException(detail=f"unknown kind(s) {bad}; known: {', '.join(KINDS)}")
    return hs, ks


def permitted_kinds(ks: list[str] | None, actor: Actor) -> list[str] | None:
    """The kinds `actor` may follow: `user` only for who may list users (the route table says
    who), refused when asked for by anyone else, dropped from the default set for them."""
    from ..routes import ROUTE_ROLES  # the table imports this module

    need = ROUTE_ROLES["GET /api/v1/users"] or "viewer"
    if allows(actor.role, need):
        return ks
    if ks is None:
        return sorted(DEFAULT_KINDS - {"user"})
    if "user" in ks:
        raise PermissionDeniedException(
            detail=f"kind user needs role {need} or higher, as GET /api/v1/users does (you have {actor.role})"
        )
    return ks


class SSEStream:
    """The raw ASGI side of one SSE client. A dropped client's connection is closed even while a
    send is blocked on a full socket (the writer is cancelled; uvicorn then closes the transport)."""

    def __init__(self, hub: Hub, client: Client) -> None:
        self.hub = hub
        self.client = client

    async def __call__(self, scope, receive, send) -> None:
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        tasks: list[asyncio.Task] = []
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
            tasks = [
                asyncio.ensure_future(self._write(send)),
                asyncio.ensure_future(self._watch(receive)),
                asyncio.ensure_future(self.client.dropped.wait()),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hub.remove(self.client)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        # Returning without finishing the body makes the server close the connection.

    async def _write(self, send) -> None:
        c = self.client
        while True:
            if not await c.next():
                await send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})
                continue
            batches = c.take()
            body = batches[0].sse if len(batches) == 1 else b"".join(b.sse for b in batches)
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _watch(self, receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return


class SSEResponse(Response):
    def __init__(self, stream: SSEStream) -> None:
        super().__init__(content=None, media_type="text/event-stream")
        self.stream = stream

    def to_asgi_response(self, app, request, **kwargs):  # noqa: ARG002 - Litestar's signature
        return self.stream


class StreamController(Controller):
    path = "/api/v1"
    tags = ["stream"]

    @get(
        "/stream",
        summary="Server-sent events: frames (per-host summaries), procs (on request), host, app, health, alert, replica, user",
        media_type="text/event-stream",
        responses=errors(403, 503),
    )
    async def stream(
        self,
        request: Request,
        gw: GatewayDep,
        actor: ActorDep,
        hosts: HostsParam = None,
        kinds: KindsParam = None,
        last_event_id: Annotated[int | None, HeaderParameter(name="Last-Event-ID", ge=0, required=False)] = None,
    ) -> SSEResponse:
        hs, ks = parse_filters(hosts, kinds)
        ks = permitted_kinds(ks, actor)
        try:
            client = gw.hub.add(hs, ks, last_event_id)
        except HubFull:
            raise HTTPException(
                status_code=503, detail="too many live connections; retry later", headers={"Retry-After": "5"}
            ) from None
        return SSEResponse(SSEStream(gw.hub, client))

    @websocket("/ws")
    async def ws(self, socket: WebSocket, gw: GatewayDep, hosts: HostsParam = None, kinds: KindsParam = None) -> None:
        try:
            hs, ks = parse_filters(hosts, kinds)
            ks = permitted_kinds(ks, socket.state.actor)  # set by the role guard, as for HTTP
        except (ClientException, PermissionDeniedException) as exc:
            await socket.close(code=1008, reason=str(exc.detail)[:120])
            return
        try:
            last = socket.query_params.get("last_event_id")
            client = gw.hub.add(hs, ks, int(last) if last and last.isdigit() else None)
        except HubFull:
            if "websocket.http.response" in (socket.scope.get("extensions") or {}):
                # Refuse the upgrade with a real 503, like the SSE route.
                body = b'{"status_code":503,"detail":"too many live connections; retry later"}'
                await socket.send(
                    {
                        "type": "websocket.http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"retry-after", b"5"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await socket.send({"type": "websocket.http.response.body", "body": body, "more_body": False})
            else:
                await socket.close(code=1013, reason="too many live connections")
            return
        await socket.accept()
        hub = gw.hub

        async def write() -> None:
            while True:
                if not await client.next():
                    await socket.send_text('{"kind":"heartbeat"}')
                    continue
                for batch in client.take():
                    for ev in batch.events:
                        await socket.send_text(ev.json.decode())

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await socket.receive_data("text")

        tasks = [
            asyncio.ensure_future(write()),
            asyncio.ensure_future(read()),
            asyncio.ensure_future(client.dropped.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hub.remove(client)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if client.dropped.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(code=1008, reason="too slow: events were dropped"), 1.0)
