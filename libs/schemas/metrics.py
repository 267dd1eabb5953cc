"""What the collector publishes: metric frames, process snapshots, host info."""

from __future__ import annotations

from .base import Message, Part

# A process snapshot never carries more than this many processes, whatever is configured.
PROCESS_HARD_CAP = 500


class CpuStats(Part, kw_only=True, frozen=True):
    percent: float
    per_core: list[float] = []
    count: int
    count_physical: int | None = None
    freq_mhz: float | None = None
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    # Percent of CPU time; None where the OS does not report them.
    iowait: float | None = None
    steal: float | None = None


class MemStats(Part, kw_only=True, frozen=True):
    total: int
    available: int
    used: int
    percent: float


class SwapStats(Part, kw_only=True, frozen=True):
    total: int = 0
    used: int = 0
    free: int = 0
    percent: float = 0.0


class DiskUsage(Part, kw_only=True, frozen=True):
    mount: str
    device: str = ""
    fstype: str = ""
    total: int
    used: int
    free: int
    percent: float


class DiskIO(Part, kw_only=True, frozen=True):
    """Rates per second over the last interval, summed over physical disks."""

    read_bps: float = 0.0
    write_bps: float = 0.0
    read_iops: float = 0.0
    write_iops: float = 0.0


class NetRates(Part, kw_only=True, frozen=True):
    """Rates per second over the last interval."""

    bytes_sent: float = 0.0
    bytes_recv: float = 0.0
    packets_sent: float = 0.0
    packets_recv: float = 0.0
    errin: float = 0.0
    errout: float = 0.0
    dropin: float = 0.0
    dropout: float = 0.0


class NetIface(NetRates, kw_only=True, frozen=True):
    name: str


class GpuProcess(Part, kw_only=True, frozen=True):
    pid: int
    mem_used: int


class GpuStats(Part, kw_only=True, frozen=True):
    index: int
    uuid: str = ""
    name: str = ""
    util_percent: float | None = None
    mem_util_percent: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    temperature: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: list[GpuProcess] = []


class ProcCounts(Part, kw_only=True, frozen=True):
    total: int = 0
    running: int = 0
    sleeping: int = 0
    idle: int = 0
    stopped: int = 0
    zombie: int = 0
    other: int = 0


class MetricFrame(Message, kw_only=True, frozen=True):
    """One sample of a host, every interval. (host, boot, seq) identifies it uniquely."""

    host: str
    ts: float  # unix seconds
    boot: int  # collector run id (start time, ms): seq restarts with each run
    seq: int
    interval: float = 5.0
    cpu: CpuStats
    mem: MemStats
    swap: SwapStats = SwapStats()
    disks: list[DiskUsage] = []
    disk_io: DiskIO = DiskIO()
    net: NetRates = NetRates()
    net_ifaces: list[NetIface] = []
    gpus: list[GpuStats] = []
    procs: ProcCounts = ProcCounts()
    uptime: float = 0.0

    @property
    def msg_id(self) -> str:
        return f"{self.host}:{self.boot}:{self.seq}"


class ProcInfo(Part, kw_only=True, frozen=True):
    pid: int
    ppid: int = 0
    name: str = ""
    user: str = ""
    cmdline: str = ""
    status: str = ""
    cpu_percent: float = 0.0
    rss: int = 0
    mem_percent: float = 0.0
    threads: int = 0
    create_time: float = 0.0
    gpu_mem: int = 0


class ProcessSnapshot(Message, kw_only=True, frozen=True):
    host: str
    ts: float
    boot: int = 0
    seq: int = 0
    total: int = 0  # processes on the host; `procs` holds all of them up to the cap (500)
    procs: list[ProcInfo] = []

    @property
    def msg_id(self) -> str:
        return f"{self.host}:{self.boot}:p{self.seq}"


class GpuInfo(Part, kw_only=True, frozen=True):
    index: int
    uuid: str = ""
    name: str = ""
    mem_total: int = 0
    driver: str = ""


class HostInfo(Message, kw_only=True, frozen=True):
    host: str
    ts: float
    hostname: str = ""
    os: str = ""
    kernel: str = ""
    arch: str = ""
    cpu_model: str = ""
    cpu_count: int = 0
    mem_total: int = 0
    boot_time: float = 0.0
    gpus: list[GpuInfo] = []
    agent_version: str = ""
    labels: dict[str, str] = {}
