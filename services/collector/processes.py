"""The process table: counts by state every frame, top-N snapshots.

Process objects are kept between scans (psutil needs the previous CPU times for a percentage,
and re-creating 500 objects each time is most of the cost); each scan reads only /proc/<pid>/stat
(state, CPU times) for every process, plus statm (RSS) when a snapshot needs ranking by memory.
Names, users, command lines and thread counts are read for the top N only.
"""

from __future__ import annotations

import pwd
import time

import psutil

from libs.schemas.metrics import PROCESS_HARD_CAP, ProcCounts, ProcInfo

_STATE_FIELD = {
    psutil.STATUS_RUNNING: "running",
    psutil.STATUS_SLEEPING: "sleeping",
    psutil.STATUS_DISK_SLEEP: "sleeping",
    psutil.STATUS_IDLE: "idle",
    psutil.STATUS_STOPPED: "stopped",
    psutil.STATUS_TRACING_STOP: "stopped",
    psutil.STATUS_ZOMBIE: "zombie",
}


class _Tracked:
    __slots__ = ("proc", "cpu_time", "cpu_percent", "status", "rss")

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.cpu_time: float | None = None
        self.cpu_percent = 0.0
        self.status = ""
        self.rss = 0


class ProcessTable:
    def __init__(self, cmdline_max: int = 512) -> None:
        self.cmdline_max = cmdline_max
        self._procs: dict[int, _Tracked] = {}
        self._last_scan: float | None = None
        self._users: dict[int, str] = {}
        self.mem_total = psutil.virtual_memory().total

    def scan(self, with_memory: bool = False) -> ProcCounts:
        """Refresh every process's state and CPU share since the previous scan."""
        now = time.monotonic()
        elapsed = None if self._last_scan is None else now - self._last_scan
        self._last_scan = now
        pids = psutil.pids()
        alive: dict[int, _Tracked] = {}
        counts = dict.fromkeys(("running", "sleeping", "idle", "stopped", "zombie", "other"), 0)
        for pid in pids:
            t = self._procs.get(pid)
            if t is None:
                try:
                    t = _Tracked(psutil.Process(pid))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            p = t.proc
            try:
                with p.oneshot():
                    t.status = p.status()
                    ct = p.cpu_times()
                    if with_memory:
                        t.rss = p.memory_info().rss
            except psutil.ZombieProcess:
                t.status = psutil.STATUS_ZOMBIE
                ct = None
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if ct is not None:
                total = ct.user + ct.system
                if t.cpu_time is not None and elapsed and total >= t.cpu_time:
                    t.cpu_percent = 100.0 * (total - t.cpu_time) / elapsed
                else:  # first sight, or the pid was reused by a younger process
                    t.cpu_percent = 0.0
                t.cpu_time = total
            counts[_STATE_FIELD.get(t.status, "other")] += 1
            alive[pid] = t
        self._procs = alive
        return ProcCounts(total=len(alive), **counts)

    def _user(self, p: psutil.Process) -> str:
        uid = p.uids().real
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def top(self, n: int, gpu_mem: dict[int, int] | None = None) -> list[ProcInfo]:
        """Top n by CPU and top n by memory (merged, hard cap 500), from the last scan."""
        n = max(0, min(n, PROCESS_HARD_CAP))
        tracked = list(self._procs.items())
        by_cpu = sorted(tracked, key=lambda kv: kv[1].cpu_percent, reverse=True)[:n]
        by_mem = sorted(tracked, key=lambda kv: kv[1].rss, reverse=True)[:n]
        chosen: dict[int, _Tracked] = dict(by_cpu)
        for pid, t in by_mem:
            chosen.setdefault(pid, t)
        gpu_mem = gpu_mem or {}
        out: list[ProcInfo] = []
        for pid, t in list(chosen.items())[:PROCESS_HARD_CAP]:
            p = t.proc
            try:
                with p.oneshot():
                    name = p.name()
                    ppid = p.ppid()
                    create_time = p.create_time()
                    try:
                        threads = p.num_threads()
                        user = self._user(p)
                        cmd = " ".join(p.cmdline())
                    except psutil.ZombieProcess:
                        threads, user, cmd = 0, "", ""
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out.append(
                ProcInfo(
                    pid=pid,
                    ppid=ppid,
                    name=name,
                    user=user,
                    cmdline=cmd[: self.cmdline_max],
                    status=t.status,
                    cpu_percent=round(t.cpu_percent, 2),
                    rss=t.rss,
                    mem_percent=round(100.0 * t.rss / self.mem_total, 3) if self.mem_total else 0.0,
                    threads=threads,
                    create_time=create_time,
                    gpu_mem=gpu_mem.get(pid, 0),
                )
            )
        return out

    def __len__(self) -> int:
        return len(self._procs)
