"""bench control_rtt: round trip of a control request.

A real commander (agent credentials, its own process) answers `apps.status` of a running app
over NATS; the baseline, measured in the same run, is a bare nats-py responder in its own
process answering the same subject shape with a reply of the same size. Then the same status
through the gateway (`GET /api/v1/hosts/{host}/apps/{name}`, keep-alive HTTP, a viewer's token).

First line: p99(apps.status over NATS) / p99(bare request/reply) — goal <= 3.
Then p50/p99 through the gateway — goal p99 < 20 ms — from a bare keep-alive HTTP client, then
the same through httpx (a client library's own cost included), and the machine's load.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.api_hosts import one_connection
from libs.embedded.stack import NatsStack, make_private_dir, start_postgres
from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas import subjects
from tests.conftest import service_env
from tests.support.commander import CommanderProcess, ctl, kill_tree_pids
from tests.support.gateway import create_database, running_gateway

HOST = "local"
N_NATS = 3000
N_HTTP = 1000
HTTP_SECONDS = 5.0
WARMUP = 200

RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1], user=sys.argv[2], password=sys.argv[3])
    body = sys.stdin.buffer.read()
    async def cb(msg):
        await msg.respond(body)
    await nc.subscribe(sys.argv[4], cb=cb)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

APP = "import time\nwhile True:\n    time.sleep(1)\n"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def timed_requests(nc, subject: str, body: bytes, n: int) -> list[float]:
    for _ in range(WARMUP):
        await nc.request(subject, body, timeout=5)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await nc.request(subject, body, timeout=5)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def run(root: Path) -> None:
    stack = NatsStack(root / "nats", [HOST]).start()
    pg = None
    cp = None
    responder = None
    pids: list[int] = []
    try:
        nc = await connect(stack.settings("admin"), "bench-control", retry_forever=False)
        await provision(nc)
        (root / "app.py").write_text(APP)
        cp = CommanderProcess(
            service_env(**stack.env(host=HOST)), root / "state", root / "commander.log", reconcile_interval_s="5"
        ).start()
        await cp.wait_ready(nc, HOST)
        reg = await ctl(
            nc,
            HOST,
            "apps.register",
            {
                "actor": "bench",
                "spec": {
                    "name": "svc",
                    "run": {"runtime": "python", "script": str(root / "app.py"), "interpreter": sys.executable},
                },
                "start": True,
            },
        )
        pids.append(reg["app"]["pid"])
        status_req = json.dumps({"actor": "bench", "name": "svc"}).encode()
        status_subject = subjects.ctl(HOST, "apps.status")
        sample = (await nc.request(status_subject, status_req, timeout=5)).data

        # Baseline: a bare responder process, same reply size, same subject depth.
        creds = stack.settings("admin")
        bare_subject = "bench.ctl.local.apps.status"
        responder = subprocess.Popen(
            [sys.executable, "-c", RESPONDER, creds.url, creds.user, creds.password, bare_subject],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        responder.stdin.write(sample)
        responder.stdin.close()
        responder.stdout.readline()

        # Interleave the two series in rounds so load on the shared machine hits both alike.
        bare: list[float] = []
        status: list[float] = []
        for _ in range(3):
            bare += await timed_requests(nc, bare_subject, status_req, N_NATS // 3)
            status += await timed_requests(nc, status_subject, status_req, N_NATS // 3)
        ratio = pct(status, 99) / pct(bare, 99)
        print(f"RESULT control_rtt_status_p99_vs_bare {ratio:.2f} ratio", flush=True)
        print(f"RESULT control_rtt_status_p50_vs_bare {pct(status, 50) / pct(bare, 50):.2f} ratio")
        print(f"RESULT control_rtt_status_p50 {pct(status, 50):.3f} ms")
        print(f"RESULT control_rtt_status_p99 {pct(status, 99):.3f} ms")
        print(f"RESULT control_rtt_bare_p50 {pct(bare, 50):.3f} ms")
        print(f"RESULT control_rtt_bare_p99 {pct(bare, 99):.3f} ms", flush=True)

        pg = start_postgres(root)
        dsn = await create_database(pg.dsn, "bench")
        with running_gateway(stack, dsn, root / "gw") as gw:
            headers = gw.headers("viewer")
            url = f"/api/v1/hosts/{HOST}/apps/svc"
            # The gateway's figure from a bare keep-alive HTTP/1.1 client (request bytes made
            # once, answer read by Content-Length): what the gateway adds, not what a client
            # library spends in this process on the same cores.
            host, port = gw.url.removeprefix("http://").split(":")
            request = (
                f"GET {url} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {headers['Authorization']}\r\n\r\n".encode()
            )
            raw: list[float] = []
            errors: list[str] = []
            await one_connection(host, int(port), request, time.perf_counter() + 0.5, [], errors)  # warm-up
            await one_connection(host, int(port), request, time.perf_counter() + HTTP_SECONDS, raw, errors)
            if errors:
                raise RuntimeError(f"gateway answered {errors[:5]}")
            http_ms = [x * 1000 for x in raw]
            # The same through httpx, as an application would call it (the client's own cost included).
            async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=10) as c:
                for _ in range(WARMUP):
                    (await c.get(url)).raise_for_status()
                http: list[float] = []
                for _ in range(N_HTTP):
                    t0 = time.perf_counter()
                    r = await c.get(url)
                    http.append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"gateway answered {r.status_code}: {r.text}")
        print(f"RESULT control_rtt_gateway_p50 {pct(http_ms, 50):.3f} ms")
        print(f"RESULT control_rtt_gateway_p99 {pct(http_ms, 99):.3f} ms")
        print(f"RESULT control_rtt_gateway_httpx_p50 {pct(http, 50):.3f} ms")
        print(f"RESULT control_rtt_gateway_httpx_p99 {pct(http, 99):.3f} ms")
        print(f"RESULT control_rtt_load_avg_1m {os.getloadavg()[0]:.2f} load")
        print(
            f"# n_nats={N_NATS} n_http_raw={len(http_ms)} n_httpx={N_HTTP} mean_status={statistics.mean(status):.3f}ms mean_bare={statistics.mean(bare):.3f}ms"
        )
        await nc.close()
    finally:
        if responder is not None:
            responder.kill()
            responder.wait()
        if cp is not None:
            cp.stop()
        kill_tree_pids(pids)
        if pg is not None:
            pg.stop()
        stack.stop()


def main() -> None:
    root = make_private_dir(prefix="fleetwatch-bench-ctl-")
    try:
        asyncio.run(run(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
