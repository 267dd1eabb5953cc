"""One app the process backend supervises (its live state next to its stored record), and
the delay before it is started again after a crash."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from libs.schemas.control import AppSpec

from .store import AppRecord


def restart_delay(
    step: int, base_s: float, max_s: float, jitter: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """`base_s * 1.5^step` ±`jitter`, with `max_s` a hard cap: at the cap the jitter only goes
    down (e.g. 12-15 s for 15 s ±20 %), so programs failing together still spread out there."""
    delay = min(base_s * 1.5 ** min(step, 200), max_s)
    return min(max(0.0, uniform(max(0.0, delay * (1 - jitter)), min(delay * (1 + jitter), max_s))), max_s)


class ProcApp:
    def __init__(self, record: AppRecord, argv: list[str], log_path: Path) -> None:
        self.record = record
        self.argv = argv
        self.log_path = log_path
        self.state = "stopped"
        self.popen: subprocess.Popen | None = None
        self.proc: psutil.Process | None = None
        self.started_at = 0.0
        self.since = time.time()
        self.exit_code: int | None = None
        self.quick_failures = 0
        self.backoff_step = 0
        self.next_start_at = 0.0
        self.stopping = False
        self.detail = ""

    @property
    def spec(self) -> AppSpec:
        return self.record.spec

    @property
    def pid(self) -> int | None:
        return self.record.pid
