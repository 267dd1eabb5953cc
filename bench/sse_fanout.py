"""Benchmark: live-event fan-out over SSE. 1,000 concurrent clients of one gateway process,
100 hosts publishing 1 frame/s each; latency from the NATS publish to each client's receipt.

RESULT lines:
  sse_fanout_p99_ms        p99 of publish -> receipt over every (event, client) pair (goal < 100 ms)
  sse_fanout_dropped       clients the gateway dropped for falling behind (goal 0)
  sse_fanout_vs_nats_p99   that p99 ÷ the p99 of a bare NATS subscriber receiving the same frames
                           in the same run (the raw baseline)
  sse_fanout_p50_ms, sse_fanout_nats_p99_ms, sse_fanout_events, sse_fanout_complete_clients
  sse_fanout_gateway_cpu   share of a core the gateway used over the window (load-independent)
  sse_fanout_clients_cpu   the same for the client processes, which run on the same cores
  sse_fanout_load_avg_1m   the machine's load at the end (others' work included)

Clients are raw HTTP connections (one asyncio protocol each, no task per client) in separate
processes; each frame's publish time is its `ts` (same machine clock). Own nats-server and PostgreSQL; the machine may be shared, so read the ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

from bench.api_hosts import ROOT, Stack, pct, result

CLIENTS = int(os.environ.get("BENCH_SSE_CLIENTS", "1000"))
PROCS = int(os.environ.get("BENCH_SSE_PROCS", "2"))
HOSTS = int(os.environ.get("BENCH_SSE_HOSTS", "100"))
SECONDS = float(os.environ.get("BENCH_SSE_SECONDS", "20"))

TS_RE = re.compile(rb'"kind":"frame","host":"[^"]*","ts":([0-9.]+)')


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- client process --------------------------------------------------------------------------
class SSEClient(asyncio.Protocol):
    """One SSE connection as a bare protocol: bytes are parsed in `data_received`, with no task
    or stream reader per client, so a thousand clients cost the client processes little next to
    the gateway on the same cores. Only complete events (up to the last blank line) are read."""

    def __init__(self, request: bytes, lat: list[float], ready: list[int]) -> None:
        self.request = request
        self.lat = lat
        self.ready = ready
        self.head = b""
        self.tail = b""
        self.started = False
        self.n = 0
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.started:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                self.closed = True
                self.transport.close()
                return
            self.started = True
            self.ready[0] += 1
        buf = self.tail + data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.tail = buf
            return
        self.tail = buf[end + 2 :]
        lat = self.lat
        for m in TS_RE.finditer(buf, 0, end):
            lat.append(now - float(m.group(1)))
            self.n += 1

    def connection_lost(self, exc) -> None:
        self.closed = True


async def client_main(url: str, token: str, n: int, until: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    ready = [0]
    request = f"GET /api/v1/stream?kinds=frame HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    clients = [SSEClient(request, lat, ready) for _ in range(n)]
    for c in clients:
        await loop.create_connection(lambda c=c: c, host, int(port))
    while ready[0] < n and time.time() < until:
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": ready[0]}), flush=True)
    await asyncio.sleep(max(0.0, until - time.time()))
    # A client the server closed early counts as dropped (-1).
    counts = [-1 if c.closed else c.n for c in clients]
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    lat.sort()
    # A sample of latencies keeps the pipe small; percentiles come from the full sorted list.
    keep = [lat[int(i * (len(lat) - 1) / 1999)] for i in range(2000)] if len(lat) > 2000 else lat
    return {
        "counts": counts,
        "n": len(lat),
        "p99": pct(lat, 99) * 1000 if lat else None,
        "p50": pct(lat, 50) * 1000 if lat else None,
        "sample_ms": [x * 1000 for x in keep],
    }


# -- the run ------------------------------------------------------------------------------------
async def bench() -> None:
    from fleetwatch.simulate import Simulator
    from libs.schemas import subjects

    st = Stack("sse", stream_max_clients=str(CLIENTS + 50), stream_batch_s=os.environ.get("BENCH_SSE_BATCH_S", "0.05"))
    procs: list[subprocess.Popen] = []
    try:
        gw = await st.start_gateway()
        nc = await st.admin_nc()
        token = gw.token("viewer")
        start_at = time.time()
        until = start_at + SECONDS + 30  # clients connect first, then the measured window
        per = [CLIENTS // PROCS + (1 if i < CLIENTS % PROCS else 0) for i in range(PROCS)]
        for n in per:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.sse_fanout", "--client", gw.url, token, str(n), str(until)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("a client process failed to start")
        # Baseline: a bare NATS subscriber on the same subjects, in this process.
        raw: list[float] = []

        async def on_frame(msg):
            m = TS_RE.search(b'"kind":"frame","host":"x","ts":' + msg.data.split(b'"ts":', 1)[1][:32])
            raw.append(time.time() - float(m.group(1)))

        await nc.subscribe("fleet.metrics.*", cb=on_frame)
        cpu0, wall0 = proc_cpu(gw.proc.pid), time.monotonic()
        clients_cpu0 = sum(proc_cpu(p.pid) for p in procs)
        sim = Simulator(HOSTS, interval=1.0, seed=2)
        hosts = sim.host_ids
        published = 0
        t_end = time.time() + SECONDS
        step = 1.0 / HOSTS
        nxt = time.monotonic()
        while time.time() < t_end:
            h = hosts[published % HOSTS]
            f = sim.frame(h, ts=time.time())
            await nc.publish(subjects.metrics(h), sim.encoded(f)[1])
            published += 1
            nxt += step
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        await nc.flush()
        wall = time.monotonic() - wall0
        gw_cpu = (proc_cpu(gw.proc.pid) - cpu0) / wall
        clients_cpu = (sum(proc_cpu(p.pid) for p in procs) - clients_cpu0) / wall
        await asyncio.sleep(2.0)
        import httpx

        metrics = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30).text
        dropped = int(re.search(r"^fleetwatch_gateway_stream_dropped_total (\d+)", metrics, re.M).group(1))
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=SECONDS + 120)
            outs.append(json.loads(out.strip().splitlines()[-1]))
        counts = [c for o in outs for c in o["counts"]]
        sample = sorted(x for o in outs for x in o["sample_ms"])
        p99 = max(o["p99"] for o in outs if o["p99"] is not None)  # the worse client process
        complete = sum(1 for c in counts if c >= published * 0.99)
        result("sse_fanout_p99_ms", p99, "ms")
        result("sse_fanout_dropped", dropped + sum(1 for c in counts if c == -1), "clients")
        result("sse_fanout_vs_nats_p99", p99 / (pct(raw, 99) * 1000), "ratio")
        result("sse_fanout_p50_ms", pct(sample, 50), "ms")
        result("sse_fanout_nats_p99_ms", pct(raw, 99) * 1000, "ms")
        result("sse_fanout_events", sum(max(0, c) for c in counts), "events")
        result("sse_fanout_complete_clients", complete, "clients")
        # Independent of how loaded the machine is: the share of one core the gateway needed.
        result("sse_fanout_gateway_cpu", gw_cpu, "cores")
        # The load clients share the same cores: what they take is not left to the gateway.
        result("sse_fanout_clients_cpu", clients_cpu, "cores")
        result("sse_fanout_load_avg_1m", os.getloadavg()[0], "load")
        print(f"{published} frames published, {len(counts)} clients", flush=True)
        await nc.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        st.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, token, n, until = sys.argv[2:6]
        try:
            import uvloop  # the gateway's loop too; the clients' CPU then goes on parsing, not on the loop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
        print(json.dumps(asyncio.run(client_main(url, token, int(n), float(until)))), flush=True)
        return
    asyncio.run(bench())


if __name__ == "__main__":
    main()
