"""A stand-in for `pynvml` (nvidia-ml-py) with the same functions, for a machine with no GPU.

Two GPUs; GPU 1 refuses power queries (like many consumer cards), so tests can check that one
failing call costs only that field. Values move a little with each call.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
_tick = itertools.count()
_init = False


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def nvmlInit() -> None:
    global _init
    _init = True


def nvmlShutdown() -> None:
    global _init
    _init = False


def _check() -> None:
    if not _init:
        raise NVMLError("Uninitialized")


def nvmlSystemGetDriverVersion() -> str:
    return "550.54.15"


def nvmlDeviceGetCount() -> int:
    _check()
    return 2


def nvmlDeviceGetHandleByIndex(i: int):
    _check()
    if i not in (0, 1):
        raise NVMLError("Invalid Argument")
    return SimpleNamespace(index=i)


def nvmlDeviceGetUUID(h) -> str:
    return f"GPU-fake-{h.index}"


def nvmlDeviceGetName(h) -> bytes:
    return b"NVIDIA Fake 80GB"  # older bindings return bytes


def nvmlDeviceGetUtilizationRates(h):
    t = next(_tick)
    return SimpleNamespace(gpu=40 + h.index * 10 + t % 5, memory=20 + h.index)


def nvmlDeviceGetMemoryInfo(h):
    total = 80 * 1024**3
    return SimpleNamespace(total=total, used=total // (4 + h.index), free=total - total // (4 + h.index))


def nvmlDeviceGetTemperature(h, sensor: int) -> int:
    return 50 + h.index


def nvmlDeviceGetPowerUsage(h) -> int:
    if h.index == 1:
        raise NVMLError_NotSupported("Not Supported")
    return 250_000  # milliwatts


def nvmlDeviceGetEnforcedPowerLimit(h) -> int:
    return 400_000


def nvmlDeviceGetComputeRunningProcesses(h):
    return [SimpleNamespace(pid=4242 + h.index, usedGpuMemory=1024**3 * (h.index + 1))]
