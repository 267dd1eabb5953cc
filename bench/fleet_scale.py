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
  fleet_frames_per_s          frames published (stream-acknowledged) per second (asked: hosts / 5)
  fleet_publish_s_max         slowest round's publishing: from its frame time to its last ack
                              (the simulator's and nats-server's share of the lag)
  fleet_commit_after_publish_s_max  ingest's share: from a round's last ack to its last commit
  fleet_hosts_server_p99_ms   p99 of the same requests inside the gateway, from its /metrics
                              histogram over the soak (fleetwatch_http_request_duration_seconds,
                              interpolated within a bucket, as Prometheus' histogram_quantile)
  fleet_gw_loop_lag_p99_ms, fleet_gw_loop_lag_max_ms
                              how late the gateway's event loop woke (fleetwatch_event_loop_lag_*):
                              what a request waits before the app sees it, the client's p99 minus
                              the server's p99 roughly
  fleet_gw_busy_lag_p99_ms    the loop lag less its thread's wait for a CPU (the gateway's own work)
  fleet_gw_cpu_wait_pct       % of the soak the gateway's loop thread was ready but had no CPU
BENCH_FLEET_GATEWAY_NICE=-10 (an experiment) runs the gateway's loop thread at that nice value.

The simulator runs in its own process (`python -m bench.fleet_scale --simulate`), so building
10,000 frames never stalls the /hosts poller's clock nor the lag watcher. A round is complete
once `count(*) WHERE time = <its frame time>` (index on time) reaches the host count.
The machine is shared (2 cores): read the lag and the growth, not absolute latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import psutil

from bench.api_hosts import Stack, one_connection, pct
from bench.common import ROOT, ingest_proc, result, stop_procs
from fleetwatch.simulate import Simulator
from libs.runtime import connect

HOSTS = int(os.environ.get("BENCH_FLEET_HOSTS", "10000"))
SECONDS = float(os.environ.get("BENCH_FLEET_SECONDS", "600"))
INTERVAL = 5.0
WARMUP = 0.2
# An experiment, not the goal's figure: BENCH_FLEET_GATEWAY_NICE=-10 runs the gateway's event
# loop ahead of the other processes (needs the privilege to lower a nice value).
NICE = int(os.environ.get("BENCH_FLEET_GATEWAY_NICE", "0"))


async def poll_hosts(url: str, token: str, until: float, lat: list[float], sent: list[float] | None = None) -> None:
    """GET /api/v1/hosts every 0.5 s like a browser tab, gzip read but not decoded: a bare
    keep-alive client, so the figure is the gateway's and not httpx unzipping 6 MB in this process."""
    hp = url.removeprefix("http://")
    host, port = hp.split(":")
    request = f"GET /api/v1/hosts HTTP/1.1\r\nHost: {hp}\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    seconds: list[float] = []
    errors: list[str] = []
    try:
        await one_connection(
            host,
            int(port),
            request,
            time.perf_counter() + (until - time.monotonic()),
            seconds,
            errors,
            pause=0.5,
            sent=sent,
        )
    finally:
        lat.extend(x * 1000 for x in seconds)


def cpu_seconds(pid: int, tree: bool = False) -> float:
    try:
        p = psutil.Process(pid)
        total = 0.0
        for q in [p, *(p.children(recursive=True) if tree else [])]:
            with contextlib.suppress(psutil.Error):
                t = q.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return 0.0


def phase(at: float, starts: list[float]) -> float:
    """Seconds from the latest round start before `at` (nan before the first)."""
    before = [s for s in starts if s <= at]
    return at - before[-1] if before else float("nan")


Series = dict[tuple[str, frozenset], float]


async def scrape(url: str, token: str) -> Series:
    """The gateway's own /metrics series (not the fleet's per-host gauges) by (name, labels)."""
    async with httpx.AsyncClient(timeout=60) as c:
        text = (await c.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})).text
    out: Series = {}
    for line in text.splitlines():
        if not line.startswith(("fleetwatch_http_", "fleetwatch_event_loop_")):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.rstrip("}").replace('"', "").split(",") if p)
        out[(name, pairs)] = float(value)
    return out


def quantile(before: Series, after: Series, name: str, q: float, **labels: str) -> float:
    """Quantile `q` (0-1) of histogram `name` over what was observed between two scrapes,
    interpolated linearly within its bucket (as histogram_quantile does)."""
    want = set(labels.items())
    buckets = []
    for (n, pairs), v in after.items():
        if n == f"{name}_bucket" and want <= pairs:
            le = float(dict(pairs)["le"])
            buckets.append((le, v - before.get((n, pairs), 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lo, below = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lo  # above the highest bound: all that can be said
            return lo + (le - lo) * ((rank - below) / (n - below) if n > below else 1.0)
        lo, below = le, n
    return lo


async def simulate(hosts: int, rounds: int) -> None:
    """The simulator process: one JSON line per round on stdout, when it starts going out and
    once the stream acknowledged all of it."""
    from libs.runtime import NatsSettings, load_settings

    nc = await connect(load_settings(NatsSettings, "FLEETWATCH_NATS_"), "fleet-sim", retry_forever=False)
    sim = Simulator(hosts, interval=INTERVAL, seed=11)

    def started(ts: float) -> None:
        print(json.dumps({"start": ts}), flush=True)

    def done(r: int, n: int) -> None:
        print(
            json.dumps({"end": sim.round_ts, "at": time.time(), "frames": r * hosts}), flush=True
        )  # round 0 also had snapshots

    try:
        await sim.run(
            {h: nc for h in sim.host_ids}, rounds=rounds, snapshot_every=10**9, on_round=done, on_start=started
        )
    finally:
        await nc.close()
        print(json.dumps({"cpu_s": time.process_time()}), flush=True)


async def read_rounds(
    out: asyncio.StreamReader, pending: dict[float, datetime], publish_s: list[tuple[float, float]], state: dict
) -> None:
    while line := await out.readline():
        ev = json.loads(line)
        if "cpu_s" in ev:
            state["cpu_s"] = ev["cpu_s"]
        elif "start" in ev:
            pending[ev["start"]] = datetime.fromtimestamp(ev["start"], UTC)  # as ingest stores it
            state.setdefault("starts", []).append(ev["start"])
        else:
            publish_s.append((ev["end"], ev["at"] - ev["end"]))
            state["frames"] = ev["frames"]


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
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
        sim_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.fleet_scale", "--simulate", str(HOSTS), str(int(SECONDS / INTERVAL)),
            env={**env, **st.nats.env("simulator"), "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        if NICE:
            # The event loop's thread (the main one: nice is per thread on Linux) ahead of the
            # rest for the CPU: the server-side and loop-lag lines then show how much of them was
            # waiting for a CPU. The client's p99 is no guide in that run: the poller starves.
            os.setpriority(os.PRIO_PROCESS, gw.proc.pid, NICE)
            print(f"gateway's loop thread at nice {NICE}", flush=True)
        watched = {
            "ingest-0": procs[0].pid,
            "ingest-1": procs[1].pid,
            "gateway": gw.proc.pid,
            "nats": st.nats.server.proc.pid,
        }
        mem: dict[str, list[tuple[float, int]]] = {k: [] for k in watched}
        # Who uses the cores during the soak (PostgreSQL: the postmaster and its backends).
        cpu_of = {**watched, "postgres": st.pg.proc.pid, "bench": os.getpid()}
        cpu0 = {k: cpu_seconds(pid, tree=(k == "postgres")) for k, pid in cpu_of.items()}
        lag: list[tuple[float, float]] = []
        lat: list[float] = []
        sent: list[float] = []
        m0 = await scrape(gw.url, token)
        pending: dict[float, datetime] = {}
        publish_s: list[tuple[float, float]] = []
        state = {"frames": 0}
        t0 = time.monotonic()
        t0_wall = time.time()
        until = t0 + SECONDS
        reader = asyncio.create_task(read_rounds(sim_proc.stdout, pending, publish_s, state))
        poll_task = asyncio.create_task(poll_hosts(gw.url, token, until, lat, sent))
        conn = await asyncpg.connect(st.dsn)
        next_mem = 0.0

        async def watch_rounds(el: float) -> None:
            # Every host of a round carries the round's time: a round is in once all are.
            for ts, at in sorted(pending.items()):
                if await conn.fetchval("SELECT count(*) FROM metrics WHERE time = $1", at) >= HOSTS:
                    del pending[ts]
                    lag.append((el, time.time() - ts, ts))

        while time.monotonic() < until and not reader.done():
            el = time.monotonic() - t0
            if el >= next_mem:
                next_mem = el + 2
                for k, pid in watched.items():
                    try:
                        mem[k].append((el, psutil.Process(pid).memory_info().rss))
                    except psutil.Error:
                        pass
            await watch_rounds(el)
            await asyncio.sleep(0.25)
        shares = {
            k: (cpu_seconds(pid, tree=(k == "postgres")) - cpu0[k]) / (time.monotonic() - t0) * 100
            for k, pid in cpu_of.items()
        }
        elapsed = time.monotonic() - t0
        drain_until = time.monotonic() + 30  # the last rounds may still be on their way in
        while pending and time.monotonic() < drain_until:
            await watch_rounds(time.monotonic() - t0)
            await asyncio.sleep(0.25)
        lag += [(time.monotonic() - t0, time.time() - ts, ts) for ts in pending]  # unfinished: at least this late
        await asyncio.wait([poll_task], timeout=10)
        m1 = await scrape(gw.url, token)  # its own stall, if any, is recorded after its text is made
        await conn.close()
        if sim_proc.returncode is None:
            sim_proc.terminate()
        await sim_proc.wait()
        await asyncio.gather(poll_task, reader, return_exceptions=True)
        shares["simulator"] = state.get("cpu_s", float("nan")) / elapsed * 100
        print("CPU over the soak, % of one core: " + ", ".join(f"{k} {v:.0f}" for k, v in shares.items()), flush=True)
        warm = WARMUP * elapsed
        after = [v for t, v, _ in lag if t >= warm]
        print("round lags (s): " + " ".join(f"{v:.1f}" for _, v, _ in lag), flush=True)
        starts = sorted(state.get("starts", []))
        slow = sorted(zip(lat, sent, strict=True), reverse=True)[:8]
        # Where in its 5 s round each of the slowest /hosts requests went out (0: the round's start).
        print(
            "slowest /hosts ms@s-into-round: " + " ".join(f"{ms:.0f}@{phase(at, starts):.2f}" for ms, at in slow),
            flush=True,
        )
        # Ingest's own share: from a round's last stream ack to its last frame committed.
        acked = dict(publish_s)
        tail = [v - acked[ts] for t, v, ts in lag if t >= warm and ts in acked]
        result("fleet_ingest_lag_max_s", max(after) if after else float("nan"), "s")
        result("fleet_ingest_lag_p50_s", pct(after, 50) if after else float("nan"), "s")
        result("fleet_hosts_p99_ms", pct(lat, 99) if lat else float("nan"), "ms")
        result("fleet_hosts_p99_ratio", (pct(lat, 99) / pct(idle, 99)) if lat and idle else float("nan"), "ratio")
        for k, series in mem.items():
            base = [v for t, v in series if t >= warm]
            if len(base) >= 2:
                result(f"fleet_mem_growth_{k}_pct", (base[-1] - base[0]) / base[0] * 100, "%")
        result("fleet_frames_per_s", state["frames"] / elapsed, "frames/s")
        pubs = [v for ts, v in publish_s if ts - t0_wall >= warm]
        result("fleet_publish_s_max", max(pubs) if pubs else float("nan"), "s")
        result("fleet_commit_after_publish_s_max", max(tail) if tail else float("nan"), "s")
        result("fleet_rounds_unfinished", len(pending), "rounds")
        result("fleet_seconds", elapsed, "s")
        hosts_route = {"method": "GET", "route": "/api/v1/hosts", "status": "200"}
        result(
            "fleet_hosts_server_p99_ms",
            quantile(m0, m1, "fleetwatch_http_request_duration_seconds", 0.99, **hosts_route) * 1000,
            "ms",
        )
        result("fleet_gw_loop_lag_p99_ms", quantile(m0, m1, "fleetwatch_event_loop_lag_seconds", 0.99) * 1000, "ms")
        result(
            "fleet_gw_loop_lag_max_ms",
            m1.get(("fleetwatch_event_loop_lag_max_seconds", frozenset()), float("nan")) * 1000,
            "ms",
        )
        result(
            "fleet_gw_busy_lag_p99_ms", quantile(m0, m1, "fleetwatch_event_loop_busy_lag_seconds", 0.99) * 1000, "ms"
        )
        wait_key = ("fleetwatch_event_loop_cpu_wait_seconds_total", frozenset())
        result("fleet_gw_cpu_wait_pct", (m1.get(wait_key, float("nan")) - m0.get(wait_key, 0.0)) / elapsed * 100, "%")
        await nc.close()
    finally:
        stop_procs(procs)
        st.stop()


def main() -> int:
    if sys.argv[1:2] == ["--simulate"]:
        asyncio.run(simulate(int(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(bench())
    return 0


if __name__ == "__main__":
    sys.exit(main())
