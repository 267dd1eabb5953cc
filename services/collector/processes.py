"""The process table: counts by state every frame, snapshots of every process (cap 500).

On Linux each scan reads one file per process, /proc/<pid>/stat, which holds everything the
frame and the ranking need (state, CPU times, RSS, parent, threads, start time); that is about
a quarter of what psutil's per-attribute calls cost. Names, users and command lines are read
through psutil for the snapshot's processes only, with the psutil.Process objects kept between snapshots.
Elsewhere the same table is filled through psutil.
"""

from __future__ import annotations

import os
import pwd
import time

import psutil

from libs.schemas.metrics import PROCESS_HARD_CAP, ProcCounts, ProcInfo
from libs.schemas.secrets import mask_argv

# /proc/<pid>/stat state letters -> psutil's status names
_LETTER = {
    "R": psutil.STATUS_RUNNING,
    "S": psutil.STATUS_SLEEPING,
    "D": psutil.STATUS_DISK_SLEEP,
    "I": psutil.STATUS_IDLE,
    "T": psutil.STATUS_STOPPED,
    "t": psutil.STATUS_TRACING_STOP,
    "Z": psutil.STATUS_ZOMBIE,
    "X": psutil.STATUS_DEAD,
    "P": psutil.STATUS_PARKED,
    "W": psutil.STATUS_WAKING,
}
# psutil status -> ProcCounts field
_COUNT_FIELD = {
    psutil.STATUS_RUNNING: "running",
    psutil.STATUS_SLEEPING: "sleeping",
    psutil.STATUS_DISK_SLEEP: "sleeping",
    psutil.STATUS_IDLE: "idle",
    psutil.STATUS_STOPPED: "stopped",
    psutil.STATUS_TRACING_STOP: "stopped",
    psutil.STATUS_ZOMBIE: "zombie",
}
_HAVE_PROC = os.path.exists("/proc/self/stat")
_CLK = os.sysconf("SC_CLK_TCK") if _HAVE_PROC else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if _HAVE_PROC else 4096


class _Tracked:
    __slots__ = ("start", "cpu_time", "cpu_percent", "status", "rss", "ppid", "threads")

    def __init__(self, start: float) -> None:
        self.start = start  # start time (ticks since boot, or create_time): tells a reused pid
        self.cpu_time: float | None = None
        self.cpu_percent = 0.0
        self.status = ""
        self.rss = 0
        self.ppid = 0
        self.threads = 0


class ProcessTable:
    def __init__(self, cmdline_max: int = 512, use_proc: bool = _HAVE_PROC) -> None:
        self.cmdline_max = cmdline_max
        self.use_proc = use_proc
        self._procs: dict[int, _Tracked] = {}
        self._objects: dict[int, psutil.Process] = {}  # top-N processes, kept for their details
        self._last_scan: float | None = None
        self._users: dict[int, str] = {}
        self.mem_total = psutil.virtual_memory().total
        self.boot_time = psutil.boot_time()

    def scan(self, with_memory: bool = True) -> ProcCounts:
        """Refresh every process's state and CPU share since the previous scan."""
        now = time.monotonic()
        elapsed = None if self._last_scan is None else now - self._last_scan
        self._last_scan = now
        alive = self._scan_proc() if self.use_proc else self._scan_psutil(with_memory)
        counts = dict.fromkeys(("running", "sleeping", "idle", "stopped", "zombie", "other"), 0)
        for t in alive.values():
            counts[_COUNT_FIELD.get(t.status, "other")] += 1
        for pid, t in alive.items():
            old = self._procs.get(pid)
            if (
                old is not None
                and old.start == t.start
                and old.cpu_time is not None
                and elapsed
                and t.cpu_time is not None
                and t.cpu_time >= old.cpu_time
            ):
                t.cpu_percent = 100.0 * (t.cpu_time - old.cpu_time) / elapsed
            # else: first sight, or the pid now belongs to another process: no baseline yet
        self._procs = alive
        return ProcCounts(total=len(alive), **counts)

    def _scan_proc(self) -> dict[int, _Tracked]:
        alive: dict[int, _Tracked] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:  # os.open/os.read: half the cost of a buffered file object, per process
                fd = os.open(f"/proc/{entry}/stat", os.O_RDONLY)
                try:
                    raw = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:  # exited meanwhile
                continue
            close = raw.rfind(b")")
            fields = raw[close + 2 :].split()
            if len(fields) < 22:
                continue
            t = _Tracked(int(fields[19]))
            t.status = _LETTER.get(fields[0].decode(), "unknown")
            t.ppid = int(fields[1])
            t.cpu_time = (int(fields[11]) + int(fields[12])) / _CLK
            t.threads = int(fields[17])
            t.rss = int(fields[21]) * _PAGE
            alive[int(entry)] = t
        return alive

    def _scan_psutil(self, with_memory: bool) -> dict[int, _Tracked]:
        alive: dict[int, _Tracked] = {}
        for p in psutil.process_iter():
            try:
                with p.oneshot():
                    t = _Tracked(p.create_time())
                    t.status = p.status()
                    ct = p.cpu_times()
                    t.cpu_time = ct.user + ct.system
                    t.ppid = p.ppid()
                    if with_memory:
                        t.rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            alive[p.pid] = t
        return alive

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

    def _created(self, t: _Tracked) -> float:
        return self.boot_time + t.start / _CLK if self.use_proc else t.start

    def _object(self, pid: int, t: _Tracked) -> psutil.Process:
        p = self._objects.get(pid)
        # A kept object whose start time differs describes an earlier process with this pid.
        if p is None or abs(p.create_time() - self._created(t)) > 1.0:
            p = psutil.Process(pid)
        return p

    def top(self, n: int, gpu_mem: dict[int, int] | None = None) -> list[ProcInfo]:
        """Every process when there are at most n, else the top n by CPU and the top n by
        memory (merged, hard cap 500), from the last scan."""
        n = max(0, min(n, PROCESS_HARD_CAP))
        tracked = list(self._procs.items())
        chosen: dict[int, _Tracked] = {}
        if len(tracked) <= n:  # the default (n = the cap): every process, idle ones included
            chosen = dict(tracked)
        else:
            by_cpu = sorted(tracked, key=lambda kv: kv[1].cpu_percent, reverse=True)[:n]
            by_mem = sorted(tracked, key=lambda kv: kv[1].rss, reverse=True)[:n]
            # Alternate the two rankings, so a cap reached still keeps both the busiest and
            # the largest processes rather than only the CPU ranking.
            for a, b in zip(by_cpu, by_mem, strict=True):
                chosen.setdefault(*a)
                chosen.setdefault(*b)
        gpu_mem = gpu_mem or {}
        out: list[ProcInfo] = []
        objects: dict[int, psutil.Process] = {}
        for pid, t in list(chosen.items())[:PROCESS_HARD_CAP]:
            try:
                p = self._object(pid, t)
                with p.oneshot():
                    create_time = p.create_time()
                    name = p.name()
                    try:
                        threads = t.threads or p.num_threads()
                        user = self._user(p)
                        # Masked here, before the line leaves the host: viewers read process
                        # tables, and a `--password=…` must not reach them nor the history.
                        cmd = " ".join(mask_argv(p.cmdline()))
                    except psutil.ZombieProcess:
                        threads, user, cmd = 0, "", ""
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            objects[pid] = p
            out.append(
                ProcInfo(
                    pid=pid,
                    ppid=t.ppid,
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
        self._objects = objects
        return out

    def __len__(self) -> int:
        return len(self._procs)
