"""Fault bench: exactly-once storage of metric frames through a 3-node NATS cluster, two ingest
workers and PostgreSQL while they fail.

The simulator publishes frames at BENCH_FAULTS_RATE frames/s (default 2,000) for
BENCH_FAULTS_SECONDS (default 60) to a 3-node cluster on loopback (streams R3). Meanwhile:
  t=5 s   kill -9 one NATS node; it comes back BENCH_FAULTS_NODE_DOWN_S later (default 30 s)
  t=12 s  kill -9 one of the two ingest workers (the other carries on alone)
  t=20 s  PostgreSQL stops (fast shutdown) and starts again
A frame counts as published once the stream acknowledged it (the simulator retries with the same
Nats-Msg-Id until it is). At the end, after ingest drained the consumer:

RESULT faults_lost <n> frames        published frames missing from the metrics table (goal 0)
RESULT faults_dup <n> frames         frames stored more than once (goal 0)
RESULT faults_published <n> frames
RESULT faults_rate_ratio <x> ratio   achieved publish rate / asked rate (the box is shared)
RESULT faults_drain_s <s> s          from the last publish to the last frame committed
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from bench.common import ingest_proc, result, stop_procs
from fleetwatch.simulate import Simulator
from libs.embedded.natscluster import NatsCluster
from libs.embedded.stack import make_private_dir, start_postgres
from libs.runtime import connect
from libs.runtime.jetstream import provision
from libs.schemas.streams import INGEST_METRICS

RATE = float(os.environ.get("BENCH_FAULTS_RATE", "2000"))
SECONDS = float(os.environ.get("BENCH_FAULTS_SECONDS", "60"))
NODE_DOWN_S = float(os.environ.get("BENCH_FAULTS_NODE_DOWN_S", "30"))
HOSTS = int(os.environ.get("BENCH_FAULTS_HOSTS", "400"))
TICK = 0.1


def log(msg: str) -> None:
    print(f"[faults] {msg}", file=sys.stderr, flush=True)


async def run(root: Path) -> None:
    cluster = NatsCluster(root / "cluster", [], size=3).start()
    pg = start_postgres(root)
    procs: list[subprocess.Popen] = []
    try:
        admin = await connect(cluster.settings("admin"), "faults-admin", retry_forever=False)
        await provision(admin)
        conn = await asyncpg.connect(pg.dsn("postgres"))
        await conn.execute('CREATE DATABASE "faults"')
        await conn.close()
        dsn = pg.dsn("faults")
        procs = [ingest_proc(cluster.env("ingest"), dsn, root / f"ingest-{i}.log", own_session=True) for i in range(2)]
        sim_nc = await connect(cluster.settings("simulator"), "faults-sim", retry_forever=False)
        sim = Simulator(HOSTS, interval=HOSTS / RATE, seed=7)
        hosts = sim.host_ids
        published: set[tuple[str, int]] = set()
        failed = 0
        per_tick = max(1, int(RATE * TICK))
        events = [(5.0, "kill-nats"), (12.0, "kill-ingest"), (20.0, "restart-pg"), (5.0 + NODE_DOWN_S, "restart-nats")]
        events.sort()
        victim = 1
        t0 = time.monotonic()
        next_t = t0
        i = 0
        pending: set[asyncio.Task] = set()

        async def publish(batch) -> None:
            nonlocal failed
            try:
                await sim.publish(sim_nc, batch, in_flight=256, timeout=5, retries=40)
                published.update((f.host, f.seq) for f in batch)
            except Exception as exc:  # gave up on this batch: it does not count as published
                failed += len(batch)
                log(f"batch of {len(batch)} not acknowledged: {exc!r}")

        while time.monotonic() - t0 < SECONDS:
            el = time.monotonic() - t0
            while events and events[0][0] <= el:
                _, what = events.pop(0)
                if what == "kill-nats":
                    log(f"t={el:.1f}s kill -9 {cluster.nodes[victim].config.stem}")
                    cluster.kill(victim)
                elif what == "restart-nats":
                    log(f"t={el:.1f}s restart {cluster.nodes[victim].config.stem}")
                    cluster.restart(victim)
                elif what == "kill-ingest":
                    log(f"t={el:.1f}s kill -9 ingest worker 0 (pid {procs[0].pid})")
                    procs[0].kill()
                elif what == "restart-pg":
                    log(f"t={el:.1f}s PostgreSQL stop + start")
                    await asyncio.to_thread(pg.stop)
                    await asyncio.to_thread(pg.start)
            ts = time.time()
            batch = [sim.frame(hosts[(i + k) % len(hosts)], ts) for k in range(per_tick)]
            i += per_tick
            task = asyncio.create_task(publish(batch))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_t += TICK
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        for ev in events:  # a run shorter than the schedule still ends with every node up
            if ev[1] == "restart-nats":
                cluster.restart(victim)
        if pending:
            await asyncio.wait(pending, timeout=120)
        pub_end = time.monotonic()
        achieved = len(published) / (pub_end - t0)
        log(f"published {len(published)} frames ({failed} given up), draining")

        js = admin.jetstream()
        drained_at = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                ci = await js.consumer_info("METRICS", INGEST_METRICS.durable)
                if ci.num_pending == 0 and ci.num_ack_pending == 0:
                    drained_at = time.monotonic()
                    break
            except Exception:
                pass
            await asyncio.sleep(0.5)
        if drained_at is None:
            log("consumer not drained within 180 s")
        conn = await asyncpg.connect(dsn)
        rows = await conn.fetch("SELECT host, seq, count(*) AS n FROM metrics GROUP BY host, boot, seq")
        await conn.close()
        stored = {(r["host"], r["seq"]) for r in rows}
        dup = sum(r["n"] - 1 for r in rows)
        lost = len(published - stored)
        result("faults_lost", lost, "frames", 6)
        result("faults_dup", dup, "frames", 6)
        result("faults_published", len(published), "frames", 6)
        result("faults_rate_ratio", achieved / RATE, "ratio", 6)
        result("faults_drain_s", (drained_at or time.monotonic()) - pub_end, "s", 6)
        await sim_nc.close()
        await admin.close()
    finally:
        stop_procs(procs)
        pg.stop()
        cluster.stop()


def main() -> int:
    root = make_private_dir(prefix="fleetwatch-bench-faults-")
    try:
        asyncio.run(run(root))
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
