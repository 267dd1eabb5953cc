"""A host's ad-hoc jobs (commander): run, list, get, stop, restart, logs, cleanup.

Every answer that shows a command line or output is masked below admin (masking.for_actor): a
job's argv may hold an admin's credentials (`--password=…`), which its viewers must not read."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.params import JSONBody, Parameter

from libs.schemas.control import JobCleanupReply, JobListReply, JobLogsReply, JobReply

from ..authn import ActorDep
from ..errors import errors
from ..masking import for_actor
from ..state import GatewayDep
from .common import HostParam
from .ctlclient import call
from .policy import run_as_fields

JobIdParam = Annotated[str, Parameter(pattern=r"^job_\d{8}_\d{6}_[0-9a-f]{6}$", max_length=40, description="job id")]
CTL_ERRORS = errors(400, 403, 404, 409, 429, 502, 503, 504)


class JobSubmission(msgspec.Struct, kw_only=True, frozen=True):
    argv: list[str]
    cwd: str = ""
    user: str = ""
    env: dict[str, str] = {}
    timeout_s: float = 300.0


class JobCleanup(msgspec.Struct, kw_only=True, frozen=True):
    older_than_s: float = 7 * 86400.0


class JobsController(Controller):
    path = "/api/v1/hosts/{host:str}/jobs"
    tags = ["jobs"]

    @get("/", summary="Jobs of a host, newest first", responses=CTL_ERRORS)
    async def list_jobs(
        self, host: HostParam, gw: GatewayDep, actor: ActorDep, limit: Annotated[int, Parameter(ge=1, le=1000)] = 100
    ) -> JobListReply:
        reply = await call(gw.nc, host, "jobs.list", {"actor": actor.username, "limit": limit}, JobListReply)
        return for_actor(reply, actor)

    @post("/", summary="Run a one-shot command (argv, never a shell)", status_code=201, responses=CTL_ERRORS)
    async def run(self, host: HostParam, data: JSONBody[JobSubmission], gw: GatewayDep, actor: ActorDep) -> JobReply:
        body = {"actor": actor.username, **msgspec.to_builtins(data), **await run_as_fields(gw, host, actor.role)}
        reply = await call(gw.nc, host, "jobs.run", body, JobReply)
        return for_actor(reply, actor)

    @post(
        "/cleanup",
        summary="Delete finished jobs (and their logs) older than older_than_s",
        status_code=200,
        responses=CTL_ERRORS,
    )
    async def cleanup(
        self, host: HostParam, data: JSONBody[JobCleanup], gw: GatewayDep, actor: ActorDep
    ) -> JobCleanupReply:
        return await call(
            gw.nc, host, "jobs.cleanup", {"actor": actor.username, "older_than_s": data.older_than_s}, JobCleanupReply
        )

    @get("/{job_id:str}", summary="One job", responses=CTL_ERRORS)
    async def get_job(self, host: HostParam, job_id: JobIdParam, gw: GatewayDep, actor: ActorDep) -> JobReply:
        return for_actor(await call(gw.nc, host, "jobs.get", {"actor": actor.username, "id": job_id}, JobReply), actor)

    @post("/{job_id:str}/stop", summary="Stop a running job", status_code=200, responses=CTL_ERRORS)
    async def stop(self, host: HostParam, job_id: JobIdParam, gw: GatewayDep, actor: ActorDep) -> JobReply:
        return for_actor(await call(gw.nc, host, "jobs.stop", {"actor": actor.username, "id": job_id}, JobReply), actor)

    @post(
        "/{job_id:str}/restart", summary="Run a job's command again (a new job)", status_code=201, responses=CTL_ERRORS
    )
    async def restart(self, host: HostParam, job_id: JobIdParam, gw: GatewayDep, actor: ActorDep) -> JobReply:
        body = {"actor": actor.username, "id": job_id, **await run_as_fields(gw, host, actor.role)}
        reply = await call(gw.nc, host, "jobs.restart", body, JobReply)
        return for_actor(reply, actor)

    @get("/{job_id:str}/logs", summary="The last lines of a job's output", responses=CTL_ERRORS)
    async def logs(
        self,
        host: HostParam,
        job_id: JobIdParam,
        gw: GatewayDep,
        actor: ActorDep,
        lines: Annotated[int, Parameter(ge=0, le=5000)] = 200,
    ) -> JobLogsReply:
        reply = await call(
            gw.nc, host, "jobs.logs", {"actor": actor.username, "id": job_id, "lines": lines}, JobLogsReply
        )
        return for_actor(reply, actor)
