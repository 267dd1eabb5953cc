"""A service still waiting for its dependencies at start stops promptly on SIGTERM (exit 0):
the replicator while its databases are unreachable, any service while NATS is not up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from libs.embedded import free_port
from tests.conftest import ROOT, service_env

pytestmark = pytest.mark.timeout(90)


def _start(module: str, env: dict[str, str], log_path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=ROOT, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT
    )


def _wait_log(proc: subprocess.Popen, log_path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if text in log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(
        f"no {text!r} in the log (exit={proc.poll()}):\n{log_path.read_text(errors='replace')[-3000:]}"
    )


def _sigterm_exit(proc: subprocess.Popen) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rc, time.monotonic() - t0


def test_replicator_stops_on_sigterm_while_databases_unreachable(nats_stack, workdir):
    dead = f"postgresql://fleetwatch:x@127.0.0.1:{free_port()}"
    env = service_env(
        **nats_stack.env(host="host-a"),
        FLEETWATCH_REPLICATOR_CENTRAL_DSN=f"{dead}/fleetwatch",
        FLEETWATCH_REPLICATOR_LOCAL_DSN=f"{dead}/fleetwatch_local",
    )
    log_path = workdir / f"replicator-nodb-{time.monotonic_ns()}.log"
    proc = _start("services.replicator", env, log_path)
    _wait_log(proc, log_path, "database not reachable yet")
    rc, took = _sigterm_exit(proc)
    log = log_path.read_text(errors="replace")
    assert rc == 0, log[-3000:]
    assert took < 5, f"took {took:.1f}s to stop"
    assert "stopped before it was ready" in log


def test_service_stops_on_sigterm_while_nats_is_not_up(workdir):
    env = service_env(FLEETWATCH_NATS_URL=f"nats://127.0.0.1:{free_port()}", FLEETWATCH_NATS_CONNECT_TIMEOUT="1")
    log_path = workdir / f"echo-nonats-{time.monotonic_ns()}.log"
    proc = _start("tests.support.echo_service", env, log_path)
    _wait_log(proc, log_path, "nats not reachable yet")
    time.sleep(1)
    assert proc.poll() is None, "a server not up yet is waited for, not an error"
    rc, took = _sigterm_exit(proc)
    assert rc == 0, log_path.read_text(errors="replace")[-3000:]
    assert took < 5, f"took {took:.1f}s to stop"
