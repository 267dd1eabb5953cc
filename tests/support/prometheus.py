"""Debian's real Prometheus, promtool and node_exporter, started on loopback for the interop tests.

prom = start_prometheus(workdir, config_yaml)            # a server (or agent=True)
httpx.get(prom.url + "/api/v1/query", params={"query": "up"})
prom.stop()
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from libs.embedded.natsserver import free_port


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


class Proc:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _wait(p: Proc, path: str, timeout: float) -> Proc:
    deadline = time.monotonic() + timeout
    while True:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.proc.args[0]} exited with {p.proc.returncode}:\n{p.log()[-4000:]}")
        try:
            if httpx.get(p.url + path, timeout=2).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            p.stop()
            raise RuntimeError(f"{p.proc.args[0]} not ready within {timeout:g} s:\n{p.log()[-4000:]}")
        time.sleep(0.2)


def start_prometheus(workdir: Path, config: str, *, agent: bool = False, timeout: float = 60) -> Proc:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / f"prometheus-{port}.yml"
    cfg.write_text(config)
    log_path = workdir / f"prometheus-{port}.log"
    args = [
        "prometheus",
        f"--config.file={cfg}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    if agent:
        args += ["--enable-feature=agent", f"--storage.agent.path={workdir / f'agent-{port}'}"]
    else:
        args += [f"--storage.tsdb.path={workdir / f'tsdb-{port}'}", "--storage.tsdb.retention.time=1d"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    return _wait(Proc(proc, f"http://127.0.0.1:{port}", log_path), "/-/ready", timeout)


def start_node_exporter(workdir: Path, timeout: float = 30) -> Proc:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"node-exporter-{port}.log"
    args = [
        "prometheus-node-exporter",
        f"--web.listen-address=127.0.0.1:{port}",
        # Only cheap collectors: the test needs node_load1, not the whole machine.
        "--collector.disable-defaults",
        "--collector.loadavg",
        "--collector.meminfo",
        "--collector.cpu",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    return _wait(Proc(proc, f"http://127.0.0.1:{port}", log_path), "/metrics", timeout)


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=timeout)
