"""The fleet: every host with online/offline and last values; one host; a live sample."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import nats.errors
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, JSONBody, Parameter

from libs.schemas import Codec, DecodeError, MetricFrame
from libs.schemas import subjects as s

from ..auditing import note
from ..authn import ActorDep
from ..directory import HostView
from ..errors import errors
from ..state import GatewayDep
from .common import HostParam
from .registration import AgentCredentials, HostRegistration, register_host

_frame_codec = Codec(MetricFrame)


class HostDetail(msgspec.Struct, kw_only=True, frozen=True):
    host: HostView
    frame: MetricFrame | None = None  # the latest frame this gateway received


class HostsController(Controller):
    path = "/api/v1/hosts"
    tags = ["hosts"]

    @post(
        "/",
        summary="Register a host: its agents' NATS credentials, shown once (controllers/registration.py)",
        status_code=201,
        responses=errors(409),
    )
    async def register(self, data: JSONBody[HostRegistration], gw: GatewayDep, actor: ActorDep) -> AgentCredentials:
        note(target=data.host)
        return await register_host(data, gw, actor)

    @get(
        "/",
        summary="Every host: online/offline, labels, last values (at most a second old; gzip when accepted)",
        media_type=MediaType.JSON,
        # The body is encoded by the directory (cached bytes); its schema is documented here.
        responses={
            200: ResponseSpec(
                list[HostView], generate_examples=False, description="Request fulfilled, document follows"
            )
        },
    )
    async def list_hosts(
        self,
        request: Request,
        gw: GatewayDep,
        status: FromQuery[Literal["online", "offline"] | None] = None,
        label: Annotated[str | None, Parameter(pattern=r"^[^=]+=.*$", description="key=value", max_length=200)] = None,
    ) -> Response[bytes]:
        lab: tuple[str, str] | None = None
        if label:
            key, _, value = label.partition("=")  # the pattern makes sure there is one
            lab = (key, value)
        # Thousands of hosts are megabytes of JSON: compressed once per rebuild, not per request.
        gz = "gzip" in request.headers.get("accept-encoding", "")
        body = await gw.directory.list_body(status, lab, gz)
        headers = {"Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if gz else {})}
        return Response(body, media_type=MediaType.JSON, headers=headers)

    @get("/{host:str}", summary="One host: info and latest frame")
    async def get_host(self, host: HostParam, gw: GatewayDep) -> HostDetail:
        view = gw.directory.view(host)
        if view is None:
            raise NotFoundException(detail=f"no host {host!r} known")
        return HostDetail(host=view, frame=gw.directory.hosts[host].frame)

    @get(
        "/{host:str}/sample",
        summary="A fresh frame asked from the host's collector now",
        responses=errors(404, 502, 504),
    )
    async def sample(self, host: HostParam, gw: GatewayDep) -> MetricFrame:
        if host not in gw.directory.hosts:
            raise NotFoundException(detail=f"no host {host!r} known")
        t = gw.config.sample_timeout_s
        try:
            msg = await gw.nc.request(s.sample(host), b"", timeout=t)
        except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise HTTPException(
                status_code=504,
                detail=f"host {host!r} did not answer within {t:g} s (collector not running or host offline)",
            ) from None
        try:
            return _frame_codec.decode(msg.data)
        except DecodeError as exc:
            raise HTTPException(
                status_code=502, detail=f"host {host!r} answered with a malformed frame: {exc.reason} at {exc.path}"
            ) from None
