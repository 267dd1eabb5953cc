"""What a host is (sent at start and hourly): OS, kernel, CPU model, memory, GPUs, labels."""

from __future__ import annotations

import platform
import socket
import time

import psutil

from libs.runtime.version import fleetwatch_version
from libs.schemas.metrics import GpuInfo, HostInfo


def os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def host_info(host: str, gpus: list[GpuInfo], labels: dict[str, str]) -> HostInfo:
    return HostInfo(
        host=host,
        ts=time.time(),
        hostname=socket.gethostname(),
        os=os_name(),
        kernel=platform.release(),
        arch=platform.machine(),
        cpu_model=cpu_model(),
        cpu_count=psutil.cpu_count() or 0,
        mem_total=psutil.virtual_memory().total,
        boot_time=psutil.boot_time(),
        gpus=gpus,
        agent_version=fleetwatch_version(),
        labels=dict(labels),
    )
