"""How late the gateway's event loop wakes a task that sleeps a fixed interval: what a request
that arrives now waits before the loop reads it, which the request histogram (measured inside
the app) cannot see. On Linux each lag is also split by the loop thread's scheduler statistics
into time it waited for a CPU (the machine's share: other processes on the cores) and the rest
(the gateway's own work holding the loop: a burst of frames, a rebuild, the garbage collector)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from .promstats import Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


def _open_schedstat() -> int | None:
    """This thread's scheduler statistics, kept open (one pread per sample); None where the
    kernel has none."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return None
    try:
        _wait_ns(fd)
    except (OSError, IndexError, ValueError):
        os.close(fd)
        return None
    return fd


def _wait_ns(fd: int) -> int:
    return int(os.pread(fd, 128, 0).split()[1])  # cpu ns, runqueue wait ns, timeslices


class LoopLag:
    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.lag = Histogram(LAG_BUCKETS)
        self.busy = Histogram(LAG_BUCKETS)  # lag less the CPU wait in the same period
        self.max = 0.0
        self.cpu_wait_s: float | None = None  # loop thread runnable but not running, in total
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        fd = _open_schedstat()  # opened here: the loop's own thread
        interval = self.interval_s
        w0 = _wait_ns(fd) if fd is not None else 0
        cpu_wait = 0.0
        if fd is not None:
            self.cpu_wait_s = cpu_wait
        try:
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(interval)
                lag = time.perf_counter() - t0 - interval
                if lag < 0.0:
                    lag = 0.0  # the loop's timers are millisecond-grained: early by a fraction
                self.lag.observe(lag)
                if lag > self.max:
                    self.max = lag
                if fd is not None:
                    w1 = _wait_ns(fd)
                    waited = (w1 - w0) / 1e9
                    w0 = w1
                    cpu_wait += waited
                    self.cpu_wait_s = cpu_wait
                    self.busy.observe(lag - waited if waited < lag else 0.0)
        finally:
            if fd is not None:
                os.close(fd)

    def exposition(self) -> list[str]:
        if self._task is None:
            return []
        out = [
            "# HELP fleetwatch_event_loop_lag_seconds how late the gateway's event loop woke a task sleeping a fixed interval",
            "# TYPE fleetwatch_event_loop_lag_seconds histogram",
            *self.lag.lines("fleetwatch_event_loop_lag_seconds"),
            "# HELP fleetwatch_event_loop_lag_max_seconds the longest event loop lag since the gateway started",
            "# TYPE fleetwatch_event_loop_lag_max_seconds gauge",
            f"fleetwatch_event_loop_lag_max_seconds {self.max:.6f}",
        ]
        if self.cpu_wait_s is not None:
            out += [
                "# HELP fleetwatch_event_loop_busy_lag_seconds event loop lag less the time its thread waited for a CPU meanwhile (the gateway's own work, or the process stopped)",
                "# TYPE fleetwatch_event_loop_busy_lag_seconds histogram",
                *self.busy.lines("fleetwatch_event_loop_busy_lag_seconds"),
                "# HELP fleetwatch_event_loop_cpu_wait_seconds_total time the event loop's thread was ready to run but waited for a CPU",
                "# TYPE fleetwatch_event_loop_cpu_wait_seconds_total counter",
                f"fleetwatch_event_loop_cpu_wait_seconds_total {self.cpu_wait_s:.6f}",
            ]
        return out
