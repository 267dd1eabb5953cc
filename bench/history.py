"""Benchmark: the history route over 24 h of one host at 5 s resolution (17,280 frames written
by the real ingest), read through the gateway.

RESULT lines:
  history_p99_ms           p99 of GET /api/v1/hosts/{host}/metrics for the last 24 h (default
                           fields, tier chosen by the route: 1-minute rollup, capped at 1,000
                           points), requests one after another from a second process (goal < 50 ms)
  history_vs_sql_p99       that p99 ÷ the p99 of the same SQL run directly with asyncpg in the
                           same run (the raw baseline: what the database alone costs)
  history_1h_p99_ms        p99 for the last hour (raw tier, 720 points)
  history_sql_p99_ms, history_p50_ms, history_points

Own nats-server and PostgreSQL; the machine may be shared, so read the ratio.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse

import asyncpg
import httpx

from bench.api_hosts import Stack, pct, result, run_load
from fleetwatch.simulate import Simulator

HOST = "hist-0"
SECONDS = float(os.environ.get("BENCH_HISTORY_SECONDS", "6"))
FIELDS = (
    "cpu_percent",
    "mem_percent",
    "load1",
    "disk_max_percent",
    "net_bytes_recv",
    "net_bytes_sent",
    "gpu_util_percent",
)


async def sql_p99(dsn: str, table: str, frm: float, to: float, width: float, n: int) -> list[float]:
    import datetime as dt

    cols = ", ".join(f"avg({c})::float8" for c in FIELDS)
    sql = f"""SELECT floor(extract(epoch FROM time) / $4) * $4 AS b, {cols}
                FROM {table} WHERE host = $1 AND time >= $2 AND time <= $3 GROUP BY 1 ORDER BY 1 LIMIT $5"""
    conn = await asyncpg.connect(dsn)
    lat = []
    try:
        f, t = dt.datetime.fromtimestamp(frm, dt.UTC), dt.datetime.fromtimestamp(to, dt.UTC)
        for _ in range(n):
            t0 = time.perf_counter()
            await conn.fetch(sql, HOST, f, t, width, 1001)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        await conn.close()
    return lat


async def bench() -> None:
    from tests.support.pipeline import start_ingest

    st = Stack("history")
    ingest = None
    try:
        gw = await st.start_gateway(ingest_schema=True)
        nc = await st.admin_nc()
        ingest = start_ingest(st.nats, st.dsn, st.dir / "ingest.log", FLEETWATCH_LOG_LEVEL="WARNING")
        sim = Simulator([HOST], interval=5.0, seed=11)
        end = time.time()
        frames = sim.history(17280, end=end)
        await sim.publish(nc, frames, in_flight=512)
        conn = await asyncpg.connect(st.dsn)
        try:
            deadline = time.monotonic() + 300
            while await conn.fetchval("SELECT count(*) FROM metrics") < len(frames):
                if time.monotonic() > deadline:
                    raise RuntimeError("ingest did not store the frames in time")
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        token = gw.token("viewer")
        frm, to = end - 86400, end + 1
        q = urllib.parse.urlencode({"from": frm, "to": to})
        probe = httpx.get(
            f"{gw.url}/api/v1/hosts/{HOST}/metrics?{q}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()
        day = run_load(gw.url, f"/api/v1/hosts/{HOST}/metrics?{q}", token, conc=1, duration=SECONDS)
        q1 = urllib.parse.urlencode({"from": end - 3600, "to": to})
        hour = run_load(gw.url, f"/api/v1/hosts/{HOST}/metrics?{q1}", token, conc=1, duration=SECONDS / 2)
        sql = await sql_p99(st.dsn, probe["tier"], frm, to, probe["step"], max(50, day["n"]))
        p99 = pct(day["lat_ms"], 99)
        result("history_p99_ms", p99, "ms")
        result("history_vs_sql_p99", p99 / pct(sql, 99), "ratio")
        result("history_1h_p99_ms", pct(hour["lat_ms"], 99), "ms")
        result("history_sql_p99_ms", pct(sql, 99), "ms")
        result("history_p50_ms", pct(day["lat_ms"], 50), "ms")
        result("history_points", len(probe["times"]), "points")
        print(
            f"tier {probe['tier']} step {probe['step']:.1f}s; {day['n']} requests; errors {day['n_errors']}", flush=True
        )
        await nc.close()
    finally:
        if ingest is not None:
            ingest.stop()
        st.stop()


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
