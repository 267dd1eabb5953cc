"""What the pipeline benches share: RESULT lines, ingest worker processes, stopping them.

Not a benchmark itself (`python -m bench` skips this module).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def result(name: str, value: float, unit: str, digits: int = 4) -> None:
    print(f"RESULT {name} {value:.{digits}g} {unit}", flush=True)


def ingest_proc(
    nats_env: dict[str, str],
    dsn: str,
    log: Path,
    *,
    storage: str = "partitions",
    own_session: bool = False,
    **settings: str,
) -> subprocess.Popen:
    """One ingest worker on the METRICS stream only, logging warnings to `log`. `settings` become FLEETWATCH_INGEST_<NAME>; BENCH_FLEETWATCH_X=v in the bench's
    environment becomes FLEETWATCH_X=v (tuning experiments). `own_session`: its own process
    group, so a signal meant for the bench does not reach it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update(nats_env)
    env.update(
        PYTHONPATH=str(ROOT),
        FLEETWATCH_DB_DSN=dsn,
        FLEETWATCH_INGEST_STORAGE=storage,
        FLEETWATCH_INGEST_STREAMS="metrics",
        FLEETWATCH_LOG_LEVEL="WARNING",
    )
    env.update({f"FLEETWATCH_INGEST_{k.upper()}": str(v) for k, v in settings.items()})
    env.update({k[len("BENCH_") :]: v for k, v in os.environ.items() if k.startswith("BENCH_FLEETWATCH_")})
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
        )


def stop_procs(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM every process still running, then wait; SIGKILL what does not stop in time."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
