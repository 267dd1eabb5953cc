"""The supervisor `fleetwatch dev` runs its processes with (fleetwatch/supervise.py), driven as a
real process with real signals: a killed child comes back after its backoff while the others
keep running, the backoff doubles up to its cap, and a stop signal ends every child (and what
each started) in reverse start order, SIGKILLing the ones that outlast the grace period."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psutil

from tests.conftest import ROOT

# The supervisor under test: a JSON list of (name, python code, restart) on argv[1].
RUNNER = """
import json, sys
from fleetwatch.supervise import ProcessSpec, Supervisor, SupervisorConfig
procs, opts = json.loads(sys.argv[1])
specs = [ProcessSpec(name=n, argv=[sys.executable, "-c", code], restart=r) for n, code, r in procs]
sys.exit(Supervisor(SupervisorConfig(processes=specs, **opts)).run())
"""

SLEEPER = "import time; print('up', flush=True); time.sleep(120)"
# Ignores SIGTERM, and starts a grandchild in its own group that must not outlive it.
STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "print('grandchild', p.pid, flush=True); time.sleep(120)"
)
POLITE = (
    "import signal, sys, time\n"
    "def bye(*_):\n    print('bye', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye); print('up', flush=True); time.sleep(120)"
)


class Run:
    def __init__(self, procs: list[tuple[str, str, str]], **opts: float) -> None:
        import json

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, json.dumps([procs, opts])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pred: Callable[[list[str]], object], timeout: float = 15.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred(list(self.lines))
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("timed out; output:\n" + "\n".join(self.lines))

    def pids(self, name: str) -> list[int]:
        pat = re.compile(rf"^\d\d:\d\d:\d\d {re.escape(name)}\s+\| started \(pid (\d+)\)$")
        return [int(m.group(1)) for ln in self.lines if (m := pat.match(ln))]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        os.killpg(self.proc.pid, sig)
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                p.kill()
            self.proc.kill()
            self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_child_is_restarted_and_the_others_keep_running():
    run = Run([("a", SLEEPER, "always"), ("b", SLEEPER, "always")], backoff_initial=0.2)
    try:
        run.wait_for(lambda _: run.pids("a") and run.pids("b"))
        (a1,), (b1,) = run.pids("a"), run.pids("b")
        os.kill(a1, signal.SIGKILL)
        run.wait_for(lambda _: len(run.pids("a")) == 2, timeout=5)
        assert any(
            re.search(r"supervisor \| a exited \(code -9, SIGKILL\); restarting in 0\.2s \(restart 1\)$", ln)
            for ln in run.lines
        ), run.lines
        assert run.pids("b") == [b1] and _alive(b1)
        a2 = run.pids("a")[1]
        assert a2 != a1 and _alive(a2)
        # prefixed output (the child prints it after its start is logged: wait, under load)
        run.wait_for(lambda lines: any(re.match(r"^\d\d:\d\d:\d\d a\s+\| up$", ln) for ln in lines), timeout=5)
        assert not any("\x1b[" in ln for ln in run.lines)  # no colour into a pipe
        assert run.stop() == 0
        assert not _alive(a2) and not _alive(b1)
    finally:
        run.kill()


def test_backoff_doubles_up_to_its_cap_and_a_finished_job_is_not_rerun():
    run = Run(
        [("crash", "import sys; sys.exit(3)", "always"), ("job", "print('done')", "on-failure")],
        backoff_initial=0.1,
        backoff_max=0.4,
    )
    try:
        delays = run.wait_for(
            lambda lines: (
                (d := re.findall(r"crash exited \(code 3\); restarting in ([\d.]+)s", "\n".join(lines)))[4:] and d
            )
        )
        assert delays[:5] == ["0.1", "0.2", "0.4", "0.4", "0.4"], delays
        assert len(run.pids("job")) == 1 and any(ln.endswith("supervisor | job exited (code 0)") for ln in run.lines)
        assert run.stop(signal.SIGTERM) == 0
    finally:
        run.kill()


def test_stop_goes_in_reverse_order_and_kills_what_outlasts_the_grace():
    run = Run([("polite", POLITE, "always"), ("stubborn", STUBBORN, "always")], stop_grace=1.0)
    try:
        grand = run.wait_for(
            lambda lines: (
                next((int(ln.split()[-1]) for ln in lines if "| grandchild" in ln), None)
                if run.pids("polite")
                else None
            )
        )
        assert isinstance(grand, int) and _alive(grand)
        t0 = time.monotonic()
        assert run.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 10
        text = "\n".join(run.lines)
        assert "SIGTERM: stopping every process" in text
        # stubborn started last, so it is stopped first; polite only after it is gone.
        bye = re.search(r"polite\s+\| bye", text)
        assert bye, text
        assert text.index("stubborn did not stop in time; killing it") < bye.start()
        assert not _alive(grand), "a child's child outlived the supervisor"
        assert not any(_alive(p) for p in run.pids("polite") + run.pids("stubborn"))
    finally:
        run.kill()
