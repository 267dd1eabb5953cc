"""A small process supervisor: what `fleetwatch dev` (`make run`) runs its processes with.

Each process runs in its own process group with its output prefixed (`12:00:01 gateway | ...`,
coloured on a terminal). One that exits unexpectedly is started again after a backoff that
doubles up to `backoff_max` and starts over once the process has stayed up `backoff_reset_after`
seconds, so a crash loop neither spins nor leaves the stack down for long. Only SIGINT, SIGTERM
or SIGHUP stop the supervisor: every child gets its stop signal in reverse start order (the
services before the servers they use), then SIGKILL for its whole group after `stop_grace`.

    Supervisor(SupervisorConfig(processes=[ProcessSpec(name="web", argv=[...])])).run()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

Restart = Literal["always", "on-failure", "never"]

# Honcho's palette: distinct on dark and light terminals.
_COLOURS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CHUNK = 1 << 16


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # the whole environment; None: the supervisor's own
    cwd: str | None = None
    # What asks this program to stop quickly: PostgreSQL's SIGTERM is a "smart" shutdown that
    # waits for every client to leave, SIGINT is its "fast" one.
    stop_signal: signal.Signals = signal.SIGTERM
    # "always": a server; "on-failure": a one-shot job, run again only when it fails.
    restart: Restart = "always"


@dataclass(frozen=True, kw_only=True)
class SupervisorConfig:
    processes: Sequence[ProcessSpec]
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_reset_after: float = 10.0
    stop_grace: float = 10.0
    out: TextIO = field(default_factory=lambda: sys.stdout)
    colour: bool | None = None  # None: when `out` is a terminal and NO_COLOR is unset
    name: str = "supervisor"  # the prefix of the supervisor's own lines


def describe_exit(code: int) -> str:
    """`code 1`, or `code -9, SIGKILL` for a process a signal ended."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code}, {signal.Signals(-code).name}"
    return f"code {code}"


class _Child:
    def __init__(self, spec: ProcessSpec, colour: int) -> None:
        self.spec = spec
        self.colour = colour
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.failures = 0  # consecutive short-lived runs: the backoff's exponent
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def signal_group(self, sig: int) -> None:
        """`sig` to the child's process group: what it started dies with it (postgres's backends,
        a service's helpers), and the group outlives its leader until its last member exits."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.children = [_Child(s, _COLOURS[i % len(_COLOURS)]) for i, s in enumerate(config.processes)]
        width = max([len(config.name), *(len(s.name) for s in config.processes)])
        self._width = width
        colour = config.colour
        if colour is None:
            colour = bool(getattr(config.out, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")
        self._colour = colour
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second Ctrl-C: no more grace
        self.stop_reason = ""

    # -- output ------------------------------------------------------------------------
    def _emit(self, name: str, colour: int | None, text: str) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self._width}} |"
        if self._colour and colour is not None:
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not kill the stack
            self.config.out.write(f"{prefix} {text}\n")
            self.config.out.flush()

    def log(self, text: str) -> None:
        self._emit(self.config.name, None, text)

    async def _pump(self, child: _Child, stream: asyncio.StreamReader) -> None:
        # Chunks, not readline(): one line longer than the reader's limit would raise there.
        pending = b""
        while chunk := await stream.read(_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for ln in lines:
                self._emit(child.spec.name, child.colour, ln.decode(errors="replace").rstrip("\r"))
        if pending:
            self._emit(child.spec.name, child.colour, pending.decode(errors="replace"))

    # -- one child ---------------------------------------------------------------------
    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        spec = child.spec
        return await asyncio.create_subprocess_exec(
            *spec.argv,
            env=dict(spec.env) if spec.env is not None else None,
            cwd=spec.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session and group: a terminal's Ctrl-C reaches only the supervisor, which
            # stops the children in order, and killpg() reaches everything a child started.
            start_new_session=True,
        )

    async def _keep(self, child: _Child) -> None:
        """Run one child until the supervisor stops, starting it again when it exits."""
        spec, cfg = child.spec, self.config
        while not child.stopping.is_set():
            started = time.monotonic()
            try:
                child.proc = proc = await self._spawn(child)
            except OSError as exc:
                code, what = 127, f"could not be started ({exc})"
            else:
                if child.stopping.is_set():  # the stop came while it was being started
                    child.signal_group(spec.stop_signal)
                self._emit(spec.name, child.colour, f"started (pid {proc.pid})")
                assert proc.stdout is not None
                pump = asyncio.create_task(self._pump(child, proc.stdout))
                code = await proc.wait()
                # Whatever the leader left in its group goes too (a restart must find its ports
                # free); a grandchild that kept the pipe open gets a moment to finish its output.
                child.signal_group(signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pump), 1.0)
                pump.cancel()
                what = f"exited ({describe_exit(code)})"
            if child.stopping.is_set():
                return
            if spec.restart == "never" or (spec.restart == "on-failure" and code == 0):
                self.log(f"{spec.name} {what}")
                return
            if time.monotonic() - started >= cfg.backoff_reset_after:
                child.failures = 0  # it ran fine for a while: this is a new crash, not a loop
            delay = min(cfg.backoff_initial * 2**child.failures, cfg.backoff_max)
            child.failures += 1
            child.restarts += 1
            self.log(f"{spec.name} {what}; restarting in {delay:.1f}s (restart {child.restarts})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.stopping.wait(), delay)

    async def _stop_child(self, child: _Child) -> None:
        child.stopping.set()
        task = child.task
        if task is None or task.done():
            return
        proc = child.proc
        if proc is not None and proc.returncode is None:
            child.signal_group(child.spec.stop_signal)
            waiter = asyncio.ensure_future(proc.wait())
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait({waiter, hurry}, timeout=self.config.stop_grace, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            if proc.returncode is None:
                self.log(f"{child.spec.name} did not stop in time; killing it")
                child.signal_group(signal.SIGKILL)
            await waiter
        await task

    # -- the whole ----------------------------------------------------------------------
    def request_stop(self, reason: str = "") -> None:
        if self._stop.is_set():
            self._hurry.set()
            return
        self.stop_reason = reason
        self._stop.set()

    async def serve(self) -> int:
        """Run every process until a stop signal (or until none is left to run); returns 0."""
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            async with asyncio.TaskGroup() as tg:
                for child in self.children:
                    child.task = tg.create_task(self._keep(child), name=child.spec.name)
                stop = tg.create_task(self._stop.wait())
                kept = [c.task for c in self.children if c.task is not None]
                everyone = asyncio.gather(*kept, return_exceptions=True)
                first: set[asyncio.Future[Any]] = {stop, everyone}
                await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
                if self._stop.is_set():
                    self.log(f"{self.stop_reason or 'stop'}: stopping every process")
                for child in reversed(self.children):
                    await self._stop_child(child)
                stop.cancel()
        finally:
            # Whatever went wrong above, no child outlives the supervisor.
            for child in self.children:
                if child.proc is not None and child.proc.returncode is None:
                    child.signal_group(signal.SIGKILL)
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        self.log("stopped")
        return 0

    def run(self) -> int:
        return asyncio.run(self.serve())
