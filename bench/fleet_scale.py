"""Fleet-scale soak: BENCH_FLEET_HOSTS simulated hosts (default 10,000) every 5 s for
BENCH_FLEET_SECONDS (default 600) through two ingest workers into PostgreSQL, with the gateway
serving /api/v1/hosts to a poller all along.

RESULT lines:
  fleet_ingest_lag_max_s      worst lag of a round after warm-up: from the round's frame time (when
                              its publishing starts) until all its frames are committed (goal < 5 s)
  fleet_ingest_lag_p50_s      median of the same
  fleet_hosts_p99_ms          p99 of GET /api/v1/hosts during the soak (goal < 30 ms, as bench api_hosts)
  fleet_hosts_p99_ratio       that p99 / the p99 of the same request before the fleet started (same run)
  fleet_mem_growth_<svc>_pct  RSS growth from the end of warm-up (first 20 %) to the end, per
                              process: ingest-0, ingest-1, gateway, nats (goal < 10 %)
  fleet_frames_per_s          frames published per second (asked: hosts / 5)

The machine is shared (2 cores): read the lag and the growth, not absolute latencies.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import asyncpg
import httpx
import psutil

from bench.api_hosts import Stack, pct
from bench.common import ingest_proc, result, stop_procs
from fleetwatch.simulate import Simulator
from libs.runtime import connect

HOSTS = int(os.environ.get("BENCH_FLEET_HOSTS", "10000"))
SECONDS = float(os.environ.get("BENCH_FLEET_SECONDS", "600"))
INTERVAL = 5.0
WARMUP = 0.2


async def poll_hosts(url: str, token: str, until: float, lat: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}, timeout=30) as c:
        while time.monotonic() < until:
            t = time.perf_counter()
            r = await c.get("/api/v1/hosts")
            if r.status_code == 200:
                lat.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.5)


async def bench() -> None:
    st = Stack("fleet")
    procs: list[subprocess.Popen] = []
    try:
        gw = await st.start_gateway(ingest_schema=True)
        nc = await st.admin_nc()
        token = gw.token("viewer")
        idle: list[float] = []
        await poll_hosts(gw.url, token, time.monotonic() + 10, idle)
        procs = [ingest_proc(st.nats.env("ingest"), st.dsn, st.dir / f"ingest-{i}.log") for i in range(2)]
        sim_nc = await connect(st.nats.settings("simulator"), "fleet-sim", retry_forever=False)
        sim = Simulator(HOSTS, interval=INTERVAL, seed=11)
        watched = {"ingest-0": procs[0].pid, "ingest-1": procs[1].pid, "gateway": gw.proc.pid, "nats": st.nats.server.proc.pid}
        mem: dict[str, list[tuple[float, int]]] = {k: [] for k in watched}
        lag: list[tuple[float, float]] = []
        lat: list[float] = []
        t0 = time.monotonic()
        until = t0 + SECONDS
        sim_task = asyncio.create_task(sim.run({h: sim_nc for h in sim.host_ids}, rounds=int(SECONDS / INTERVAL), snapshot_every=10**9))
        poll_task = asyncio.create_task(poll_hosts(gw.url, token, until, lat))
        conn = await asyncpg.connect(st.dsn)
        done_rounds: set[float] = set()
        next_mem = 0.0
        while time.monotonic() < until and not sim_task.done():
            el = time.monotonic() - t0
            if el >= next_mem:
                next_mem = el + 2
                for k, pid in watched.items():
                    try:
                        mem[k].append((el, psutil.Process(pid).memory_info().rss))
                    except psutil.Error:
                        pass
            # Every host of a round carries the round's start time: a round is in once all are.
            rows = await conn.fetch(
                "SELECT extract(epoch FROM time)::float8 AS ts, count(*) AS n FROM metrics WHERE time > now() - interval '120 seconds' GROUP BY 1"
            )
            now = time.time()
            for r in rows:
                if r["n"] >= HOSTS and r["ts"] not in done_rounds:
                    done_rounds.add(r["ts"])
                    lag.append((el, now - r["ts"]))
            await asyncio.sleep(0.5)
        await conn.close()
        sim_task.cancel()
        await asyncio.gather(poll_task, return_exceptions=True)
        elapsed = time.monotonic() - t0
        warm = WARMUP * elapsed
        after = [v for t, v in lag if t >= warm]
        result("fleet_ingest_lag_max_s", max(after) if after else float("nan"), "s")
        result("fleet_ingest_lag_p50_s", pct(after, 50) if after else float("nan"), "s")
        result("fleet_hosts_p99_ms", pct(lat, 99) if lat else float("nan"), "ms")
        result("fleet_hosts_p99_ratio", (pct(lat, 99) / pct(idle, 99)) if lat and idle else float("nan"), "ratio")
        for k, series in mem.items():
            base = [v for t, v in series if t >= warm]
            if len(base) >= 2:
                result(f"fleet_mem_growth_{k}_pct", (base[-1] - base[0]) / base[0] * 100, "%")
        result("fleet_frames_per_s", sim.published / elapsed, "frames/s")
        result("fleet_seconds", elapsed, "s")
        await sim_nc.close()
        await nc.close()
    finally:
        stop_procs(procs)
        st.stop()


def main() -> int:
    asyncio.run(bench())
    return 0


if __name__ == "__main__":
    sys.exit(main())
