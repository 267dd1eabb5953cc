"""One host's metric history: the tier (raw / 1 min / 1 h) is chosen by the range, and the
points are averaged into buckets so no answer has more than `max_points`."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.exceptions import ClientException
from litestar.params import Parameter

from ..state import GatewayDep
from .common import FromParam, HostParam, TimeParam, table_exists, time_range, utc

# Columns present in the raw table and in both rollups (same names, see the History schema).
FIELDS = (
    "cpu_percent",
    "mem_percent",
    "mem_used",
    "swap_percent",
    "load1",
    "load5",
    "load15",
    "disk_max_percent",
    "disk_read_bps",
    "disk_write_bps",
    "net_bytes_sent",
    "net_bytes_recv",
    "gpu_util_percent",
    "gpu_mem_used",
    "procs_total",
)
DEFAULT_FIELDS = (
    "cpu_percent",
    "mem_percent",
    "load1",
    "disk_max_percent",
    "net_bytes_recv",
    "net_bytes_sent",
    "gpu_util_percent",
)
# Fields whose per-bucket peak is kept too: the rollups store it as `<field>_max` (ingest's
# ROLLUP), so a 75 % spike still shows under a 30 % hourly average.
PEAKS = {"cpu_percent": "cpu_percent_max", "mem_percent": "mem_percent_max"}
# (table, resolution s, longest range it serves)
TIERS = (("metrics", 5.0, 6 * 3600.0), ("metrics_1m", 60.0, 7 * 86400.0), ("metrics_1h", 3600.0, float("inf")))


class History(msgspec.Struct, kw_only=True, frozen=True):
    host: str
    tier: str
    step: float  # seconds per point
    fields: list[str]
    times: list[float]  # bucket starts, unix seconds
    series: dict[str, list[float | None]]
    max: dict[str, list[float | None]] = {}  # per-bucket peak of the PEAKS fields asked for
    from_: float = msgspec.field(name="from")
    to: float


def pick_tier(span: float, step: float | None) -> tuple[str, float]:
    for table, res, longest in TIERS:
        if span <= longest and (step is None or step < res * 12 or table == "metrics_1h"):
            return table, res
    return TIERS[-1][0], TIERS[-1][1]


class HistoryController(Controller):
    path = "/api/v1/hosts"
    tags = ["history"]

    @get("/{host:str}/metrics", summary="Metric history (tier picked by range, points capped)")
    async def metrics(
        self,
        host: HostParam,
        gw: GatewayDep,
        from_: FromParam = None,
        to: TimeParam = None,
        step: Annotated[float | None, Parameter(ge=1, le=86400 * 30, description="seconds per point")] = None,
        fields: Annotated[
            str | None, Parameter(max_length=500, description="comma-separated: " + ",".join(FIELDS))
        ] = None,
        max_points: Annotated[int | None, Parameter(ge=1, le=10_000)] = None,
    ) -> History:
        f, t = time_range(from_, to)
        wanted = [x.strip() for x in fields.split(",") if x.strip()] if fields else list(DEFAULT_FIELDS)
        bad = [x for x in wanted if x not in FIELDS]
        if bad or not wanted:
            raise ClientException(detail=f"unknown field(s) {bad}; known: {', '.join(FIELDS)}")
        cap = min(max_points or gw.config.history_max_points, 10_000)
        span = max(t - f, 1.0)
        table, res = pick_tier(span, step)
        width = max(step or res, res, span / cap)
        if not await table_exists(gw.pool, table):
            raise ClientException(status_code=503, detail="history tables not created yet (ingest has not run)")
        peaks = [c for c in wanted if c in PEAKS]
        peak_cols = [f"max({c if table == 'metrics' else PEAKS[c]})::float8" for c in peaks]
        cols = ", ".join([f"avg({c})::float8" for c in wanted] + peak_cols)
        # Buckets aligned on multiples of the width since the epoch, so consecutive polls line up.
        rows = await gw.pool.fetch(
            f"""SELECT floor(extract(epoch FROM time) / $4) * $4 AS b, {cols}
                  FROM {table} WHERE host = $1 AND time >= $2 AND time <= $3
                 GROUP BY 1 ORDER BY 1 LIMIT $5""",
            host,
            utc(f),
            utc(t),
            width,
            cap + 1,
        )
        rows = rows[-cap:]
        times = [float(r[0]) for r in rows]
        series = {c: [r[i + 1] for r in rows] for i, c in enumerate(wanted)}
        n = len(wanted) + 1
        peak = {c: [r[n + i] for r in rows] for i, c in enumerate(peaks)}
        return History(
            host=host, tier=table, step=width, fields=wanted, times=times, series=series, max=peak, from_=f, to=t
        )
