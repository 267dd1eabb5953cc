"""A host's latest process snapshot, and one process's CPU and memory over time.

Command lines are masked below admin (the collector masks them before they leave the host;
rows stored before it did are masked here)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.exceptions import ClientException
from litestar.params import FromQuery, Parameter

from libs.schemas.secrets import mask_text

from ..authn import ActorDep
from ..masking import sees_secrets
from ..state import GatewayDep
from .common import FromParam, HostParam, LimitParam, TimeParam, table_exists, time_range, utc


class Proc(msgspec.Struct, kw_only=True, frozen=True):
    pid: int
    ppid: int
    name: str
    user: str
    cmdline: str
    status: str
    cpu_percent: float
    rss: int
    mem_percent: float
    threads: int
    create_time: float | None
    gpu_mem: int


class ProcList(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    ts: float | None
    total: int  # processes on the host
    procs: list[Proc]
    # Processes the snapshot holds (every process up to the collector's cap of 500), so a
    # list reads "len(procs) of total" truthfully and `stored < total` says the cap was hit.
    stored: int = 0


class ProcHistory(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    pid: int
    name: str
    times: list[float]
    cpu_percent: list[float]
    rss: list[int]
    mem_percent: list[float]
    threads: list[int] = []
    tier: str = "proc_samples"  # processes have one tier: the snapshots themselves
    step: float = 0.0  # seconds per point


SORTS = ("cpu_percent", "rss", "mem_percent", "pid", "name", "threads", "gpu_mem")


async def _need_tables(gw: GatewayDep) -> None:
    if not await table_exists(gw.pool, "proc_samples"):
        raise ClientException(status_code=503, detail="history tables not created yet (ingest has not run)")


class ProcessesController(Controller):
    path = "/api/v1/hosts"
    tags = ["processes"]

    @get("/{host:str}/processes", summary="Latest process snapshot, sortable")
    async def latest(
        self,
        host: HostParam,
        gw: GatewayDep,
        actor: ActorDep,
        sort: FromQuery[
            Literal["cpu_percent", "rss", "mem_percent", "pid", "name", "threads", "gpu_mem"]
        ] = "cpu_percent",
        order: FromQuery[Literal["asc", "desc"]] = "desc",
        limit: LimitParam = 500,
    ) -> ProcList:
        await _need_tables(gw)
        async with gw.pool.acquire() as conn:
            ts = await conn.fetchval(
                "SELECT max(time) FROM proc_samples WHERE host = $1 AND time > now() - interval '1 day'", host
            )
            if ts is None:
                return ProcList(host=host, ts=None, total=0, procs=[])
            stored = await conn.fetchval("SELECT count(*) FROM proc_samples WHERE host = $1 AND time = $2", host, ts)
            rows = await conn.fetch(
                f"SELECT * FROM proc_samples WHERE host = $1 AND time = $2 ORDER BY {sort} {order}, pid LIMIT $3",
                host,
                ts,
                limit,
            )
        clear = sees_secrets(actor)
        procs = [
            Proc(
                pid=r["pid"],
                ppid=r["ppid"],
                name=r["name"],
                user=r["username"],
                cmdline=r["cmdline"] if clear else mask_text(r["cmdline"]),
                status=r["status"],
                cpu_percent=r["cpu_percent"],
                rss=r["rss"],
                mem_percent=r["mem_percent"],
                threads=r["threads"],
                create_time=r["create_time"].timestamp() if r["create_time"] else None,
                gpu_mem=r["gpu_mem"],
            )
            for r in rows
        ]
        total = rows[0]["procs_total"] if rows else 0
        return ProcList(host=host, ts=ts.timestamp(), total=total, procs=procs, stored=stored)

    @get("/{host:str}/processes/{pid:int}/history", summary="CPU and memory of one process over time")
    async def history(
        self,
        host: HostParam,
        pid: Annotated[int, Parameter(ge=0, le=2**31 - 1)],
        gw: GatewayDep,
        from_: FromParam = None,
        to: TimeParam = None,
        step: Annotated[float | None, Parameter(ge=1, le=86400 * 30, description="seconds per point")] = None,
        max_points: Annotated[int | None, Parameter(ge=1, le=10_000)] = None,
    ) -> ProcHistory:
        await _need_tables(gw)
        f, t = time_range(from_, to)
        cap = min(max_points or gw.config.history_max_points, 10_000)
        # Snapshots come every procs_interval (15 s by default): buckets never finer than 1 s,
        # as wide as asked, and wide enough that the range fits in max_points.
        width = max(step or 1.0, (t - f) / cap, 1.0)
        rows = await gw.pool.fetch(
            """SELECT floor(extract(epoch FROM time) / $5) * $5 AS b, avg(cpu_percent)::float8 AS cpu,
                      avg(rss)::float8 AS rss, avg(mem_percent)::float8 AS mem,
                      avg(threads)::float8 AS threads, max(name) AS name
                 FROM proc_samples WHERE host = $1 AND pid = $2 AND time >= $3 AND time <= $4
                GROUP BY 1 ORDER BY 1 DESC LIMIT $6""",
            host,
            pid,
            utc(f),
            utc(t),
            width,
            cap,
        )
        rows = rows[::-1]  # the newest `cap` buckets, oldest first
        return ProcHistory(
            host=host,
            pid=pid,
            name=rows[-1]["name"] if rows else "",
            times=[float(r["b"]) for r in rows],
            cpu_percent=[r["cpu"] for r in rows],
            rss=[int(r["rss"]) for r in rows],
            mem_percent=[r["mem"] for r in rows],
            threads=[round(r["threads"]) for r in rows],
            step=width,
        )
