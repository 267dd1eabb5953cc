"""Benchmark: the collector's own cost on a host with 500 processes, at the 5 s interval.

RESULT lines:
  collector_cpu_percent         CPU of the collector process, percent of one core (goal < 0.5)
  collector_vs_bare_psutil      its CPU ÷ that of a bare psutil loop reading the same fields at the
                                same interval, measured side by side in the same run
  collector_rss_mb              resident memory of the collector (goal < 60 MB)
  node_exporter_cpu_percent     Debian's prometheus-node-exporter scraped at the same interval,
                                when it is installed (otherwise a line says it was skipped)

The collector runs as in production (`python -m services.collector`, publishing to a real
nats-server); sleeping processes are started to bring the host to 500 processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from libs.embedded.natsserver import free_port, wait_port
from libs.embedded.stack import NatsStack, make_private_dir

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 5.0
WINDOW = float(os.environ.get("BENCH_COLLECTOR_WINDOW", "60"))
TARGET_PROCS = 500
TOP_N = 25


def result(name: str, value: float, unit: str) -> None:
    print(f"RESULT {name} {value:.4g} {unit}", flush=True)


def bare_loop(interval: float = INTERVAL, top_n: int = TOP_N, duration: float = 3600.0) -> None:
    """The baseline: the same fields with plain psutil calls, no publishing, no encoding."""
    end = time.monotonic() + duration
    n = 0
    next_t = time.monotonic()
    while time.monotonic() < end:
        psutil.cpu_times()
        psutil.cpu_times(percpu=True)
        os.getloadavg()
        psutil.virtual_memory()
        psutil.swap_memory()
        for p in psutil.disk_partitions(all=False):
            try:
                psutil.disk_usage(p.mountpoint)
            except OSError:
                pass
        psutil.disk_io_counters(perdisk=True)
        psutil.net_io_counters(pernic=True)
        psutil.boot_time()
        snap = n % 3 == 0
        attrs = ["status", "cpu_times"] + (["memory_info"] if snap else [])
        infos = [p for p in psutil.process_iter(attrs)]
        if snap:
            by_cpu = sorted(
                infos, key=lambda p: sum(p.info["cpu_times"][:2]) if p.info["cpu_times"] else 0, reverse=True
            )[:top_n]
            by_mem = sorted(
                infos, key=lambda p: p.info["memory_info"].rss if p.info["memory_info"] else 0, reverse=True
            )[:top_n]
            for p in {p.pid: p for p in by_cpu + by_mem}.values():
                try:
                    with p.oneshot():
                        p.name(), p.ppid(), p.create_time(), p.num_threads(), p.uids(), p.cmdline()
                except psutil.Error:
                    pass
        n += 1
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def main() -> int:
    workdir = make_private_dir(prefix="fleetwatch-bench-collector-")
    stack = NatsStack(workdir / "nats", ["bench"]).start()
    sleepers: list[subprocess.Popen] = []
    procs: dict[str, subprocess.Popen] = {}
    try:
        missing = max(0, TARGET_PROCS - len(psutil.pids()))
        sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(missing)]
        print(f"host has {len(psutil.pids())} processes ({missing} sleepers started)", flush=True)

        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
        env.update(
            stack.env(host="bench"),
            PYTHONPATH=str(ROOT),
            FLEETWATCH_LOG_LEVEL="WARNING",
            FLEETWATCH_COLLECTOR_INTERVAL=str(INTERVAL),
            FLEETWATCH_COLLECTOR_TOP_N=str(TOP_N),
        )
        log = open(workdir / "collector.log", "ab")
        procs["collector"] = subprocess.Popen(
            [sys.executable, "-m", "services.collector"], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        procs["bare"] = subprocess.Popen(
            [sys.executable, "-c", "from bench.collector import bare_loop; bare_loop()"],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
        exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        port = free_port()
        if exporter:
            procs["node_exporter"] = subprocess.Popen(
                [exporter, f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_port("127.0.0.1", port, 15, procs["node_exporter"])

        time.sleep(8)  # past interpreter start-up and the first frames
        ps = {k: psutil.Process(p.pid) for k, p in procs.items()}
        before = {k: cpu_seconds(p) for k, p in ps.items()}
        t0 = time.monotonic()
        scrape_bytes = 0
        while time.monotonic() - t0 < WINDOW:
            if exporter:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    scrape_bytes = len(r.read())
            time.sleep(INTERVAL - (time.monotonic() - t0) % INTERVAL)
        el = time.monotonic() - t0
        cpu = {k: 100.0 * (cpu_seconds(p) - before[k]) / el for k, p in ps.items()}
        rss = ps["collector"].memory_info().rss / 2**20
        if procs["collector"].poll() is not None:
            print((workdir / "collector.log").read_text()[-3000:], file=sys.stderr)
            return 1
        result("collector_cpu_percent", cpu["collector"], "%")
        result("collector_vs_bare_psutil", cpu["collector"] / max(cpu["bare"], 1e-9), "x")
        result("bare_psutil_cpu_percent", cpu["bare"], "%")
        result("collector_rss_mb", rss, "MB")
        if exporter:
            result("node_exporter_cpu_percent", cpu["node_exporter"], "%")
            result("node_exporter_rss_mb", ps["node_exporter"].memory_info().rss / 2**20, "MB")
            print(f"(node_exporter scraped every {INTERVAL:g}s, {scrape_bytes} bytes per scrape)")
        else:
            print("prometheus-node-exporter not installed: side-by-side comparison skipped")
    finally:
        for p in list(procs.values()) + sleepers:
            if p.poll() is None:
                p.terminate()
        for p in list(procs.values()) + sleepers:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
