"""Unmanaged Node.js and Python processes on a host, to adopt as apps. Their command lines are
masked below admin: a process started by hand may carry `--password=…` or a DSN."""

from __future__ import annotations

from litestar import Controller, get

from libs.schemas.control import ScanReply

from ..authn import ActorDep
from ..errors import errors
from ..masking import for_actor
from ..state import GatewayDep
from .common import HostParam
from .ctlclient import call


class ScanController(Controller):
    path = "/api/v1/hosts/{host:str}/scan"
    tags = ["apps"]

    @get(
        "/",
        summary="Running Node.js/Python processes no app manages (pid, cmdline, cwd, user, ports)",
        responses=errors(403, 502, 503, 504),
    )
    async def scan(self, host: HostParam, gw: GatewayDep, actor: ActorDep) -> ScanReply:
        return for_actor(await call(gw.nc, host, "procs.scan", {"actor": actor.username}, ScanReply), actor)
