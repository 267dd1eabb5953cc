"""A host's apps (commander): list, register, remove, start/stop/restart, status, logs (tail and
live SSE follow). Each call carries the authenticated user as the actor of the host's audit.

Below admin every answer is masked (masking.for_actor): an app's env (`DATABASE_URL=postgres://
app:pw@…`) and secret-looking argv values are an admin's, not its operators' or viewers'."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody, Parameter
from litestar.response import ServerSentEvent

from libs.runtime import deadletter
from libs.schemas import Codec, DecodeError, LogBatch, LogLine, subjects
from libs.schemas.control import AppListReply, AppReply, AppSpec, LogsReply
from libs.schemas.secrets import mask_deep

from ..authn import ActorDep
from ..errors import errors
from ..masking import for_actor, sees_secrets
from ..state import Gateway, GatewayDep
from .common import HostParam, typed
from .ctlclient import call
from .policy import run_as_fields

NameParam = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64, description="app name")]
LOG_LEASE_S = 30.0
_BATCH = Codec(LogBatch)


class AppRegistration(msgspec.Struct, kw_only=True, frozen=True):
    spec: AppSpec
    replace: bool = False
    start: bool = False


CTL_ERRORS = errors(400, 403, 404, 409, 429, 502, 503, 504)


def app_action(method: Callable, suffix: str, verb: str, summary: str) -> HTTPRouteHandler:
    """`apps.<verb>` of one app: the same request and reply for remove/start/stop/restart."""

    async def handler(self, host, name, gw, actor):
        reply = await call(gw.nc, host, f"apps.{verb}", {"actor": actor.username, "name": name}, AppReply, timeout=60)
        return for_actor(reply, actor)

    annotations = {"host": HostParam, "name": NameParam, "gw": GatewayDep, "actor": ActorDep, "return": AppReply}
    return method("/{name:str}" + suffix, summary=summary, status_code=200, responses=CTL_ERRORS)(
        typed(handler, verb, annotations)
    )


class AppsController(Controller):
    path = "/api/v1/hosts/{host:str}/apps"
    tags = ["apps"]

    @get("/", summary="Apps registered on a host, with their state", responses=CTL_ERRORS)
    async def list_apps(self, host: HostParam, gw: GatewayDep, actor: ActorDep) -> AppListReply:
        return for_actor(await call(gw.nc, host, "apps.list", {"actor": actor.username}, AppListReply), actor)

    @post("/", summary="Register an app (process or systemd backend)", status_code=201, responses=CTL_ERRORS)
    async def register(
        self, host: HostParam, data: JSONBody[AppRegistration], gw: GatewayDep, actor: ActorDep
    ) -> AppReply:
        body = {
            "actor": actor.username,
            "spec": msgspec.to_builtins(data.spec),
            "replace": data.replace,
            "start": data.start,
            **await run_as_fields(gw, host, actor.role),
        }
        return for_actor(await call(gw.nc, host, "apps.register", body, AppReply, timeout=60), actor)

    @get("/{name:str}", summary="One app's state", responses=CTL_ERRORS)
    async def status(self, host: HostParam, name: NameParam, gw: GatewayDep, actor: ActorDep) -> AppReply:
        return for_actor(
            await call(gw.nc, host, "apps.status", {"actor": actor.username, "name": name}, AppReply), actor
        )

    remove = app_action(delete, "", "remove", "Stop and unregister an app")
    start = app_action(post, "/start", "start", "Start an app")
    stop = app_action(post, "/stop", "stop", "Stop an app (SIGTERM, then SIGKILL after its stop timeout)")
    restart = app_action(post, "/restart", "restart", "Restart an app")

    @get("/{name:str}/logs", summary="The last lines of an app's log (journald for systemd apps)", responses=CTL_ERRORS)
    async def logs(
        self,
        host: HostParam,
        name: NameParam,
        gw: GatewayDep,
        actor: ActorDep,
        lines: Annotated[int, Parameter(ge=0, le=5000)] = 100,
    ) -> LogsReply:
        request = {"actor": actor.username, "name": name, "lines": lines}
        return for_actor(await call(gw.nc, host, "apps.logs", request, LogsReply), actor)

    @get(
        "/{name:str}/logs/stream",
        summary="Live log lines (SSE, one event per batch); ends when the client goes",
        responses=CTL_ERRORS,
    )
    async def logs_stream(
        self,
        host: HostParam,
        name: NameParam,
        gw: GatewayDep,
        actor: ActorDep,
        lines: Annotated[int, Parameter(ge=0, le=5000)] = 0,
    ) -> ServerSentEvent:
        request = {"actor": actor.username, "name": name, "lines": lines, "follow": True, "lease_s": LOG_LEASE_S}
        first = await call(gw.nc, host, "apps.logs", request, LogsReply)  # 4xx here, before the stream opens
        clear = sees_secrets(actor)
        return ServerSentEvent(self._follow(gw, host, name, request, first, clear), event_type="logs")

    @staticmethod
    async def _follow(
        gw: Gateway, host: str, name: str, request: dict, first: LogsReply, clear: bool
    ) -> AsyncIterator[str]:
        def shown(batch: LogBatch) -> LogBatch:
            return batch if clear else msgspec.convert(mask_deep(msgspec.to_builtins(batch)), LogBatch)

        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)

        async def on_batch(msg) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a slow reader loses batches, not the gateway
                queue.put_nowait(msg.data)

        sub = await gw.nc.subscribe(subjects.logs(host, name), cb=on_batch)
        renew_at = time.monotonic() + LOG_LEASE_S / 3
        try:
            if first.lines:
                tail = [LogLine(ts=ln.ts, line=ln.line, stream=ln.stream, level=ln.level) for ln in first.lines]
                yield msgspec.json.encode(shown(LogBatch(host=host, app=name, lines=tail))).decode()
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    data = b""
                if time.monotonic() >= renew_at:
                    # The lease keeps the host following only while someone watches.
                    with contextlib.suppress(Exception):
                        await call(gw.nc, host, "apps.logs", {**request, "lines": 0}, LogsReply, timeout=5)
                    renew_at = time.monotonic() + LOG_LEASE_S / 3
                if data:
                    try:
                        batch = _BATCH.decode(data)
                    except DecodeError as exc:  # nobody else reads log batches: quarantine, not drop
                        await deadletter.send(gw.nc, "gateway", subjects.logs(host, name), data, exc)
                        continue
                    yield msgspec.json.encode(shown(batch)).decode()
                else:
                    yield ""  # heartbeat (an empty data event keeps proxies from closing the stream)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
