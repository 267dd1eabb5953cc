"""Collector settings: FLEETWATCH_COLLECTOR_* (plus the shared NATS/host/log areas)."""

from __future__ import annotations

import msgspec

from libs.runtime import HostSettings, LogSettings, NatsSettings
from libs.schemas.metrics import PROCESS_HARD_CAP


class CollectorConfig(msgspec.Struct, kw_only=True, frozen=True):
    nats: NatsSettings = NatsSettings()
    host: HostSettings = HostSettings()
    log: LogSettings = LogSettings()
    interval: float = 5.0  # seconds between metric frames
    procs_interval: float = 15.0  # seconds between process snapshots
    hostinfo_interval: float = 3600.0
    # Processes per snapshot: every process up to this many (so an idle process has a history
    # too), else the top N by CPU and by memory merged. Hard cap 500.
    top_n: int = PROCESS_HARD_CAP
    cmdline_max: int = 512
    buffer_seconds: float = 3600.0  # frames kept while NATS is unreachable
    snapshot_buffer: int = 4  # process snapshots kept while NATS is unreachable (newest win)
    publish_timeout: float = 5.0
    freq_every: int = 12  # read the CPU frequency every N frames (costly on many-core hosts)
    nvml_module: str = "pynvml"  # the NVML binding; tests point it at a fake with the same functions
    gpu: bool = True

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.procs_interval <= 0 or self.hostinfo_interval <= 0:
            raise ValueError("intervals must be positive")
        if self.top_n < 0:
            raise ValueError("top_n must be >= 0")

    @property
    def buffer_frames(self) -> int:
        return max(1, int(self.buffer_seconds / self.interval))
