"""Benchmark: `GET /api/v1/hosts` with 10,000 hosts known, under load from a second process.

RESULT lines:
  api_hosts_ratio      requests/s of /api/v1/hosts (auth, role guard, stats middleware, host
                       directory) ÷ requests/s of a bare Litestar JSON route serving the same body
                       (pre-encoded, no auth) under the same load, in the same run (goal >= 0.5)
  api_hosts_p99_ms     p99 latency of /api/v1/hosts under that load (goal < 30 ms)
  api_hosts_rps, api_hosts_bare_rps, api_hosts_bare_p99_ms, api_hosts_body_bytes
  api_hosts_busy_p99_ms, api_hosts_busy_rps
                       the same load while every host sends a frame each BUSY_INTERVAL s, all at
                       once (as a fleet's collectors do): the directory takes 2,000 frames/s in
                       bursts of 10,000 and the /hosts body changes all the time

The load client is a separate process (raw HTTP/1.1 keep-alive connections, body read by
Content-Length, not parsed). Own nats-server and PostgreSQL; the machine may be shared, so read
the ratio rather than the absolute figures.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from litestar import Litestar, MediaType, Request, Response, get

ROOT = Path(__file__).resolve().parent.parent
HOSTS = int(os.environ.get("BENCH_API_HOSTS", "10000"))
CONC = int(os.environ.get("BENCH_API_CONC", "4"))
DURATION = float(os.environ.get("BENCH_API_SECONDS", "8"))
BUSY_INTERVAL = float(os.environ.get("BENCH_API_BUSY_INTERVAL", "5"))


def result(name: str, value: float, unit: str) -> None:
    print(f"RESULT {name} {value:.4g} {unit}", flush=True)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


# -- the load client (runs in its own process) ----------------------------------------------
async def one_connection(
    host: str,
    port: int,
    request: bytes,
    until: float,
    lat: list[float],
    errors: list[str],
    pause: float = 0.0,
    sent: list[float] | None = None,
) -> None:
    """One keep-alive connection sending `request` until `until` (perf_counter), `pause` seconds
    apart: each answer's latency in `lat` (seconds), non-200 statuses in `errors`, and when
    `sent` is given, the wall time each answered request went out."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            t0_wall = time.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if status != 200:
                errors.append(str(status))
                continue
            lat.append(time.perf_counter() - t0)
            if sent is not None:
                sent.append(t0_wall)
            if pause:
                await asyncio.sleep(pause)
    finally:
        writer.close()


async def load(url: str, path: str, token: str, conc: int, duration: float) -> dict:
    hp = url.removeprefix("http://")
    host, port = hp.split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    # Like a browser (and wrk with the header set): compressed bodies, read but not decoded.
    request = f"GET {path} HTTP/1.1\r\nHost: {hp}\r\nAccept-Encoding: gzip\r\n{auth}\r\n".encode()
    lat: list[float] = []
    errors: list[str] = []
    await one_connection(host, int(port), request, time.perf_counter() + 0.5, [], errors)  # warm-up
    t0 = time.perf_counter()
    until = t0 + duration
    await asyncio.gather(*(one_connection(host, int(port), request, until, lat, errors) for _ in range(conc)))
    el = time.perf_counter() - t0
    return {
        "n": len(lat),
        "rps": len(lat) / el,
        "lat_ms": [x * 1000 for x in lat],
        "errors": errors[:5],
        "n_errors": len(errors),
    }


def run_load(url: str, path: str, token: str, conc: int = CONC, duration: float = DURATION) -> dict:
    """The load from a second process: `python -m bench.api_hosts --load ...`."""
    r = subprocess.run(
        [sys.executable, "-m", "bench.api_hosts", "--load", url, path, token or "-", str(conc), str(duration)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout)


# -- the bare baseline (its own process) ----------------------------------------------------
def bare_app(body_file: str):
    body = Path(body_file).read_bytes()
    gz = gzip.compress(body, 1, mtime=0)

    @get("/bare", media_type=MediaType.JSON)
    async def bare(request: Request) -> Response[bytes]:
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(
                gz, media_type=MediaType.JSON, headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            )
        return Response(body, media_type=MediaType.JSON)

    return Litestar(route_handlers=[bare], logging_config=None)


def start_bare(body_file: Path, port: int) -> subprocess.Popen:
    code = (
        "import sys, uvicorn; from bench.api_hosts import bare_app; "
        "uvicorn.run(bare_app(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning', access_log=False)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(body_file), str(port)], cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/bare", timeout=2)
            return p
        except httpx.HTTPError:
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("bare app did not start")


# -- a stack with a gateway -----------------------------------------------------------------
class Stack:
    """nats-server + PostgreSQL + gateway in a private directory, for the gateway benchmarks."""

    def __init__(self, name: str, **gateway_settings: str) -> None:
        from libs.embedded.stack import NatsStack, make_private_dir, start_postgres

        self.dir = make_private_dir(prefix=f"fleetwatch-bench-{name}-")
        self.nats = NatsStack(self.dir / "nats", ["local"]).start()
        self.pg = start_postgres(self.dir)
        self.settings = gateway_settings
        self.gw = None
        self.dsn = ""

    async def start_gateway(self, ingest_schema: bool = False):
        from tests.support.gateway import apply_ingest_schema, create_database, start_gateway

        self.dsn = await create_database(self.pg.dsn, "bench")
        if ingest_schema:
            await apply_ingest_schema(self.dsn)
        self.gw = start_gateway(self.nats, self.dsn, self.dir / "gw", **self.settings)
        return self.gw

    async def admin_nc(self):
        from libs.runtime import connect
        from libs.runtime.jetstream import provision

        nc = await connect(self.nats.settings("admin"), "bench-admin", retry_forever=False)
        await provision(nc)
        return nc

    def stop(self) -> None:
        if self.gw is not None:
            self.gw.stop()
        self.pg.stop()
        self.nats.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


async def busy_load(url: str, token: str, nc, sim) -> tuple[dict, float]:
    """The load client against /hosts while rounds of every host's frame are published."""
    from libs.schemas import subjects

    # One round encoded ahead and sent each time (the directory takes a frame as new when its
    # ts is not older), so this process spends its time publishing, not simulating.
    ts = time.time()
    round_ = [(subjects.metrics(h), sim.encoded(sim.frame(h, ts=ts))[1]) for h in sim.host_ids]
    load = asyncio.ensure_future(asyncio.to_thread(run_load, url, "/api/v1/hosts", token))
    await asyncio.sleep(0.5)  # the client's warm-up
    t0 = time.monotonic()
    published = 0
    while not load.done():
        start = time.monotonic()
        for subject, data in round_:
            await nc.publish(subject, data)
        published += len(round_)
        await nc.flush()
        await asyncio.wait([load], timeout=max(0.0, BUSY_INTERVAL - (time.monotonic() - start)))
    return load.result(), published / (time.monotonic() - t0)


async def bench() -> None:
    from fleetwatch.simulate import Simulator
    from libs.embedded.natsserver import free_port
    from libs.schemas import subjects

    st = Stack("api")
    bare = None
    try:
        gw = await st.start_gateway()
        nc = await st.admin_nc()
        sim = Simulator(HOSTS, seed=5)
        # Core publishes: the gateway's directory learns hosts from the live subjects.
        for h in sim.host_ids:
            await nc.publish(subjects.hosts(h), sim.encoded(sim.info(h))[1])
            await nc.publish(subjects.metrics(h), sim.encoded(sim.frame(h))[1])
        await nc.flush()
        token = gw.token("viewer")
        deadline = time.monotonic() + 60
        while True:
            body = httpx.get(f"{gw.url}/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=30).content
            if len(json.loads(body)) >= HOSTS or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        known = len(json.loads(body))
        body_file = st.dir / "hosts.json"
        body_file.write_bytes(body)
        port = free_port()
        bare = start_bare(body_file, port)
        b = run_load(f"http://127.0.0.1:{port}", "/bare", "")
        g = run_load(gw.url, "/api/v1/hosts", token)
        if g["n_errors"] or b["n_errors"]:
            print(f"errors: gateway {g['errors']} bare {b['errors']}", flush=True)
        result("api_hosts_ratio", g["rps"] / b["rps"], "ratio")
        result("api_hosts_p99_ms", pct(g["lat_ms"], 99), "ms")
        result("api_hosts_rps", g["rps"], "req/s")
        result("api_hosts_p50_ms", pct(g["lat_ms"], 50), "ms")
        result("api_hosts_bare_rps", b["rps"], "req/s")
        result("api_hosts_bare_p99_ms", pct(b["lat_ms"], 99), "ms")
        result("api_hosts_known_hosts", known, "hosts")
        result("api_hosts_body_bytes", len(body), "bytes")
        busy, frames = await busy_load(gw.url, token, nc, sim)
        result("api_hosts_busy_p99_ms", pct(busy["lat_ms"], 99), "ms")
        result("api_hosts_busy_rps", busy["rps"], "req/s")
        result("api_hosts_busy_frames_per_s", frames, "frames/s")
        result("api_hosts_load_avg_1m", os.getloadavg()[0], "load")
        await nc.close()
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        st.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        url, path, token, conc, duration = sys.argv[2:7]
        print(json.dumps(asyncio.run(load(url, path, "" if token == "-" else token, int(conc), float(duration)))))
        return
    asyncio.run(bench())


if __name__ == "__main__":
    main()
