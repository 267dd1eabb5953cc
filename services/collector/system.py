"""CPU, memory, filesystems, disk I/O and network of this host, as MetricFrame parts.

Rates are computed from counter deltas between two calls (not psutil's module-level state),
so an on-demand sample and the periodic frames share one consistent baseline.
"""

from __future__ import annotations

import os
import time

import psutil

from libs.schemas.metrics import CpuStats, DiskIO, DiskUsage, MemStats, NetIface, NetRates, SwapStats

from .rates import Rates

# Filesystems that do not hold user data (virtual, in-memory, images, container layers).
PSEUDO_FSTYPES = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "fuse.lxcfs",
        "fuse.portal",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "procfs",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
        "nfsd",
        "rootfs",
        "shm",
        "aufs",
    }
)
# Block devices that are not disks of their own (loop images, RAM disks, device-mapper views
# whose I/O is already counted on the disks underneath).
VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "fd", "sr", "nbd")

NET_FIELDS = ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "errin", "errout", "dropin", "dropout")


def whole_disks() -> set[str] | None:
    """Names of whole block devices (partitions would be counted twice); None if unknown."""
    try:
        return {d for d in os.listdir("/sys/block") if not d.startswith(VIRTUAL_DISK_PREFIXES)}
    except OSError:
        return None


class SystemSampler:
    def __init__(self, freq_every: int = 12) -> None:
        self.freq_every = max(1, freq_every)
        self._calls = 0
        self._freq: float | None = None
        self._count = psutil.cpu_count() or 1
        self._count_physical = psutil.cpu_count(logical=False)
        self._cpu_last: tuple | None = None
        self._core_last: list | None = None
        self._last_t: float | None = None
        self._disk_rates = Rates()
        self._net_rates = Rates()
        self._disks = whole_disks()

    # -- CPU -----------------------------------------------------------------------------
    @staticmethod
    def _busy_share(prev, cur) -> tuple[float, dict[str, float]]:
        """Percent busy between two cpu_times samples, and the share of some named fields."""
        deltas = {f: max(0.0, getattr(cur, f) - getattr(prev, f)) for f in cur._fields}
        # guest time is already included in user/nice on Linux
        total = sum(v for k, v in deltas.items() if k not in ("guest", "guest_nice"))
        if total <= 0:
            return 0.0, {}
        idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
        shares = {k: 100.0 * v / total for k, v in deltas.items() if k in ("iowait", "steal")}
        return max(0.0, min(100.0, 100.0 * (total - idle) / total)), shares

    def cpu(self) -> CpuStats:
        cur = psutil.cpu_times()
        cores = psutil.cpu_times(percpu=True)
        percent, shares = (0.0, {}) if self._cpu_last is None else self._busy_share(self._cpu_last, cur)
        per_core: list[float] = []
        if self._core_last is not None and len(self._core_last) == len(cores):
            per_core = [round(self._busy_share(a, b)[0], 2) for a, b in zip(self._core_last, cores, strict=True)]
        self._cpu_last, self._core_last = cur, cores
        if self._calls % self.freq_every == 0:
            try:
                f = psutil.cpu_freq()
                self._freq = round(f.current, 1) if f and f.current else None
            except (OSError, NotImplementedError, AttributeError):
                self._freq = None
        try:
            l1, l5, l15 = os.getloadavg()
        except OSError:
            l1 = l5 = l15 = 0.0
        return CpuStats(
            percent=round(percent, 2),
            per_core=per_core,
            count=self._count,
            count_physical=self._count_physical,
            freq_mhz=self._freq,
            load1=l1,
            load5=l5,
            load15=l15,
            iowait=round(shares.get("iowait", 0.0), 2) if hasattr(cur, "iowait") else None,
            steal=round(shares.get("steal", 0.0), 2) if hasattr(cur, "steal") else None,
        )

    # -- memory --------------------------------------------------------------------------
    @staticmethod
    def memory() -> tuple[MemStats, SwapStats]:
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        return (
            MemStats(total=vm.total, available=vm.available, used=vm.used, percent=vm.percent),
            SwapStats(total=sw.total, used=sw.used, free=sw.free, percent=sw.percent),
        )

    # -- filesystems ---------------------------------------------------------------------
    @staticmethod
    def filesystems() -> list[DiskUsage]:
        out: list[DiskUsage] = []
        seen: set[str] = set()
        for p in psutil.disk_partitions(all=False):
            if p.fstype in PSEUDO_FSTYPES or p.mountpoint in seen or not p.fstype:
                continue
            seen.add(p.mountpoint)
            try:
                u = psutil.disk_usage(p.mountpoint)
            except OSError:  # unmounted meanwhile, or no permission: skip that one mount
                continue
            out.append(
                DiskUsage(
                    mount=p.mountpoint,
                    device=p.device,
                    fstype=p.fstype,
                    total=u.total,
                    used=u.used,
                    free=u.free,
                    percent=u.percent,
                )
            )
        return out

    # -- rates ---------------------------------------------------------------------------
    def _disk_io(self, elapsed: float) -> DiskIO:
        try:
            per = psutil.disk_io_counters(perdisk=True) or {}
        except (OSError, RuntimeError):
            return DiskIO()
        names = [n for n in per if (self._disks is None or n in self._disks)]
        self._disk_rates.forget_missing(set(names))
        rb = wb = ri = wi = 0.0
        for n in names:
            c = per[n]
            rb += self._disk_rates.rate((n, "rb"), c.read_bytes, elapsed)
            wb += self._disk_rates.rate((n, "wb"), c.write_bytes, elapsed)
            ri += self._disk_rates.rate((n, "ri"), c.read_count, elapsed)
            wi += self._disk_rates.rate((n, "wi"), c.write_count, elapsed)
        return DiskIO(read_bps=round(rb, 1), write_bps=round(wb, 1), read_iops=round(ri, 2), write_iops=round(wi, 2))

    def _net(self, elapsed: float) -> tuple[NetRates, list[NetIface]]:
        try:
            per = psutil.net_io_counters(pernic=True) or {}
        except OSError:
            return NetRates(), []
        self._net_rates.forget_missing(set(per))
        ifaces: list[NetIface] = []
        total = dict.fromkeys(NET_FIELDS, 0.0)
        for name, c in per.items():
            vals = {f: round(self._net_rates.rate((name, f), getattr(c, f), elapsed), 2) for f in NET_FIELDS}
            ifaces.append(NetIface(name=name, **vals))
            if name != "lo":  # loopback traffic never leaves the host
                for f in NET_FIELDS:
                    total[f] += vals[f]
        return NetRates(**{f: round(v, 2) for f, v in total.items()}), ifaces

    def sample(self) -> dict:
        """Everything but GPUs and process counts, as MetricFrame keyword arguments."""
        now = time.monotonic()
        elapsed = 0.0 if self._last_t is None else now - self._last_t
        self._last_t = now
        cpu = self.cpu()
        self._calls += 1
        mem, swap = self.memory()
        net, ifaces = self._net(elapsed)
        return dict(
            cpu=cpu,
            mem=mem,
            swap=swap,
            disks=self.filesystems(),
            disk_io=self._disk_io(elapsed),
            net=net,
            net_ifaces=ifaces,
            uptime=round(time.time() - psutil.boot_time(), 1),
        )
